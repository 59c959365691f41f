"""The CPU protocol's command on a tiny slice: all three methods, one epoch,
results files that the summary reads; not the protocol itself."""
import json
import os
import os.path as osp

import pytest

from conftest import ROOT, run_tool

TOOL = 'tools/experiments/cpu_protocol.py'


def test_the_protocols_pieces_fit_together(tmp_path, cifar10_mini):
    results, work = str(tmp_path / 'results'), str(tmp_path / 'work')
    args = [TOOL, '--data-root', cifar10_mini, '--n-train', '2',
            '--n-test', '2', '--epochs', '1', '--seeds', '0', '--results',
            results, '--work-root', work, '--threads', '1']
    proc = run_tool(*args)
    assert sorted(os.listdir(results)) == [
        'baseline_seed0.json', 'dtskd_seed0.json', 'teskd_seed0.json']
    for method in ('baseline', 'teskd', 'dtskd'):
        run = json.load(open(osp.join(results, f'{method}_seed0.json')))
        assert run['protocol'] is False and run['epochs'] == 1
        assert run['data']['train']['images'] == 20
        assert run['data']['test']['images'] == 20
        assert [v['epoch'] for v in run['val']] == [1]
        assert 0 <= run['val'][0]['top1'] <= 100
        assert run['train'] and run['train_epoch_losses'][0]['epoch'] == 1
        assert len(run['launches']) == 1 and not run['resumed']
        assert run['launches'][0]['exit_code'] == 0
        if method != 'baseline':
            assert 'student3_top1' in run['val'][0]
            assert 'ensemble_top1' in run['val'][0]
    assert 'loss_hist_teacher' in json.load(open(osp.join(
        results, 'dtskd_seed0.json')))['train_epoch_losses'][0]
    # Done runs are skipped; a finished run without its file gets it back
    # from its logs, without training again.
    os.remove(osp.join(results, 'teskd_seed0.json'))
    logs = sorted(os.listdir(osp.join(work, 'teskd_seed0')))
    proc = run_tool(*args)
    assert proc.stdout.count('skipped') == 2
    assert 'teskd_seed0: top-1' in proc.stdout
    assert sorted(os.listdir(osp.join(work, 'teskd_seed0'))) == logs
    assert osp.isfile(osp.join(results, 'teskd_seed0.json'))
    # A diagnostic run: its own config, its own results file.
    run_tool(*args, '--methods', 'teskd-ce0.8')
    run = json.load(open(osp.join(results, 'teskd-ce0.8_seed0.json')))
    assert run['config'].endswith('teskd-ce0.8_resnet18-w16_cifar10jpg-1k.py')
    losses = run['train_epoch_losses'][0]
    plain = json.load(open(osp.join(results, 'teskd_seed0.json')))
    # CE weighted 0.8 instead of 0.2: four times the same first-step term.
    assert run['train'][0]['loss_ce_teacher'] == pytest.approx(
        4 * plain['train'][0]['loss_ce_teacher'], rel=1e-4)
    assert losses['epoch'] == 1


def test_a_shrunk_protocol_stays_out_of_the_protocols_results(cifar10_mini):
    proc = run_tool(TOOL, '--data-root', cifar10_mini, '--epochs', '1',
                    check=False)
    assert proc.returncode == 2
    assert 'differ from the protocol: write their results elsewhere than ' \
        'results/cpu_protocol' in proc.stderr


def test_readme_and_docs_show_what_the_results_files_give():
    """Every figure of README's Results and docs/experiments.md is the
    summary of results/cpu_protocol/*.json."""
    proc = run_tool('tools/experiments/summarize_cpu_protocol.py', '--check',
                    check=False)
    assert proc.returncode == 0, proc.stderr
    assert osp.isfile(osp.join(ROOT, 'docs', 'experiments',
                               'cpu_protocol_curves.png'))

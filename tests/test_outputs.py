"""Every tool checks where it will write before it starts its work: a file
where a folder goes, a folder where a file goes, or a folder that cannot be
made is refused in one line, and nothing is evaluated or written first."""
import os.path as osp

import pytest

from teskd_mm.utils.outputs import output_problem

from conftest import tool_in_process, write_tiny_config


@pytest.fixture(scope='module')
def tiny(tmp_path_factory, cifar10_mini):
    return write_tiny_config(
        str(tmp_path_factory.mktemp('outputs') / 'tiny.py'), cifar10_mini)


@pytest.fixture
def a_file(tmp_path):
    path = tmp_path / 'a_file'
    path.write_text('')
    return str(path)


def refused(capsys, tool, *args):
    with pytest.raises(SystemExit) as info:
        tool_in_process(tool, *args)
    assert info.value.code not in (0, None)
    err = capsys.readouterr().err + str(info.value.code)
    assert 'Traceback' not in err
    return err


def test_output_problems(a_file, tmp_path):
    assert output_problem(str(tmp_path / 'new' / 'deeper' / 'x.json')) \
        is None
    assert output_problem(str(tmp_path / 'new'), folder=True) is None
    assert output_problem(a_file + '/x.json') == \
        f'cannot be made: {a_file} is a file, not a folder'
    assert output_problem(a_file, folder=True) == 'is a file, not a folder'
    assert output_problem(str(tmp_path)) == 'is a folder, not a file'


@pytest.mark.parametrize('option', ['--out', '--work-dir'])
def test_test_tool_checks_its_outputs_first(tiny, a_file, tmp_path, capsys,
                                            option):
    work = str(tmp_path / 'work')
    args = ['--out', a_file + '/metrics.json', '--work-dir', work] \
        if option == '--out' else ['--work-dir', a_file + '/work']
    # The checkpoint does not exist: the outputs are checked before it.
    err = refused(capsys, 'test.py', tiny, str(tmp_path / 'no.pth'), *args)
    named = 'metrics.json' if option == '--out' else 'work'
    expected = '--out' if option == '--out' else 'The work dir'
    assert f'{expected} {a_file}/{named} cannot be made: {a_file} is a ' \
        'file, not a folder; choose another' in err
    assert not osp.exists(work)


def test_test_tool_out_is_a_folder(tiny, tmp_path, capsys):
    folder = tmp_path / 'metrics.json'
    folder.mkdir()
    err = refused(capsys, 'test.py', tiny, str(tmp_path / 'no.pth'),
                  '--out', str(folder))
    assert f'--out {folder} is a folder, not a file' in err


def test_benchmark_out(tiny, a_file, capsys):
    err = refused(capsys, 'benchmark.py', tiny, '--out',
                  a_file + '/bench.json')
    assert f'--out {a_file}/bench.json cannot be made: {a_file} is a file' \
        in err

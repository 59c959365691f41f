"""The library warnings every run printed that say nothing to its user.

Each is matched by its exact text and the module that warns, and each has
its reason below; any other warning is shown as usual. The package imports
this module before anything else, and the tools import the package before
the libraries that warn.
"""
import logging
import warnings

# (message start, category, module that warns, why it is silenced)
KNOWN_WARNINGS = (
    ('pkg_resources is deprecated as an API', UserWarning, '',
     'mmengine 0.10.7 imports pkg_resources (to resolve mmpretrain:: '
     'configs), which setuptools deprecates; setuptools<82 is pinned, so it '
     'works, and there is nothing the user can change.'),
    ('Fail to import ``MultiScaleDeformableAttention``', UserWarning,
     'mmcv', 'mmcv-lite has no compiled ops, and no model of mmpretrain '
     'or of this package uses that one.'),
)


# Lines mmengine's logger prints in every training run, whatever the config.
KNOWN_LOG_LINES = (
    ('"FileClient" will be deprecated in future',
     'mmengine 0.10.7\'s CheckpointHook and save_checkpoint build a '
     'FileClient themselves and log mmengine\'s own deprecation of it.'),
    ('"HardDiskBackend" is the alias of "LocalBackend"',
     'logged by the same FileClient, for its default local backend.'),
)


def _not_known_line(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(
        tuple(line for line, _ in KNOWN_LOG_LINES))


def quiet_known_log_lines(logger: logging.Logger) -> None:
    """Leave the lines of :data:`KNOWN_LOG_LINES` out of ``logger``."""
    if _not_known_line not in logger.filters:
        logger.addFilter(_not_known_line)


def silence_known_warnings() -> None:
    """Ignore exactly the warnings of :data:`KNOWN_WARNINGS`."""
    for message, category, module, _ in KNOWN_WARNINGS:
        warnings.filterwarnings(
            'ignore', message=f'^{message}', category=category,
            module=module)

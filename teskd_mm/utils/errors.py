"""The error every pre-flight check raises."""
import re


class ConfigCheckError(ValueError):
    """A config, data set or checkpoint that cannot be used as given.

    Raised before the Runner starts, so nothing has been written.
    """


def clean_message(e: BaseException) -> str:
    """The message of a registry build error without mmengine's prefixes."""
    return re.sub(r'class `\w+` in [\w/.]+\.py: ', '', str(e)).strip()

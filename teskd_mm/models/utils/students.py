"""The ``students`` argument that the neck and the head share."""
from typing import Sequence, Tuple


def check_students(owner: str, students: Sequence[int],
                   num_levels: int) -> Tuple[int, ...]:
    """The sorted student levels, or a ValueError naming what would fit.

    Args:
        owner (str): The component, for the message.
        students (Sequence[int]): The 1-based levels that feed a student.
        num_levels (int): Number of backbone stages; students sit at levels
            ``1 .. num_levels - 1``.
    """
    valid = tuple(range(1, num_levels))
    try:
        levels = tuple(sorted(set(int(s) for s in students)))
    except (TypeError, ValueError):
        levels = ()
    if levels and len(levels) != len(tuple(students)):
        raise ValueError(
            f'{owner} students={students!r} names a level more than once; '
            f'name each level once, e.g. students={levels}.')
    if not levels or any(s not in valid for s in levels):
        raise ValueError(
            f'{owner} students={students!r} is not a non-empty subset of '
            f'{valid}: with {num_levels} stages the students sit at levels '
            f'{valid} (1 is the shallowest); give a tuple, e.g. '
            f'students={valid[-1:]}.')
    return levels

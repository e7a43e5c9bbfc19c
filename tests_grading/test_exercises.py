"""pruning_lib.exercises: a blank hole raises a clear error; skip_until_done turns only that into a message."""
import pytest

from pruning_lib.exercises import ExerciseNotDone, hole, skip_until_done


def test_hole_raises_not_implemented_naming_the_question():
    with pytest.raises(NotImplementedError, match=r"exercise q00_1: count the weights"):
        hole("q00_1", "count the weights")


def test_hole_rejects_a_malformed_question_name():
    with pytest.raises(ValueError, match="q<nb>_<k>"):
        hole("question one", "anything")


def test_skip_until_done_prints_the_question_and_skips_the_rest(capsys):
    ran = []
    with skip_until_done():
        ran.append("before")
        hole("q01_3", "write the surgery")
        ran.append("after")
    assert ran == ["before"]
    assert capsys.readouterr().out == "skipped until exercise q01_3 is done: write the surgery\n"


def test_skip_until_done_lets_other_errors_through():
    with pytest.raises(ZeroDivisionError):
        with skip_until_done():
            1 / 0
    with pytest.raises(NotImplementedError):          # a plain NotImplementedError is not a blank hole
        with skip_until_done():
            raise NotImplementedError("library code")


def test_exercise_not_done_carries_the_question():
    with pytest.raises(ExerciseNotDone) as info:
        hole("q04_2", "recalibrate")
    assert (info.value.question, info.value.task) == ("q04_2", "recalibrate")

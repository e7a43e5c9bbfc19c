"""pruning_lib.course.exercises: a blank hole raises a clear error; skip_until_done turns only that into a message."""
import pytest

from pruning_lib.course.exercises import ExerciseNotDone, hole, skip_until_done


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


# check(): expected against got, and where they first differ

import math  # noqa: E402

import torch  # noqa: E402

from pruning_lib.course.exercises import CheckFailed, check, checking  # noqa: E402


def test_check_passes_equal_values_silently():
    check("n", 3, 3)
    check("x", 0.1 + 0.2, 0.3, rtol=1e-12)
    check("t", torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.0 + 1e-12]), rtol=1e-9)
    check("d", {"a": [1, 2], "b": 2.5}, {"a": [1, 2], "b": 2.5})
    check("inf", (1.0, math.inf), (1.0, math.inf))


def test_check_names_expected_got_and_hint():
    with pytest.raises(CheckFailed, match=r"^layer_params\(conv\): expected 448, got 432\. Hint: count the bias$"):
        check("layer_params(conv)", 432, 448, hint="count the bias")


def test_check_tensor_shape_then_first_differing_entry():
    with pytest.raises(CheckFailed, match=r"expected shape \(16,\), got shape \(15,\)"):
        check("scores", torch.zeros(15), torch.zeros(16))
    got, expected = torch.arange(6.0).reshape(2, 3), torch.arange(6.0).reshape(2, 3)
    got[1, 1] = 9.0
    with pytest.raises(CheckFailed, match=r"1 of 6 entries differ .*index \(1, 1\): expected 4, got 9; max \|difference\| 5"):
        check("scores", got, expected)
    with pytest.raises(CheckFailed, match=r"expected a tensor of shape \(2,\), got list"):
        check("scores", [1.0, 2.0], torch.tensor([1.0, 2.0]))
    with pytest.raises(CheckFailed, match="expected dtype torch.float64, got dtype torch.float32"):
        check("scores", torch.ones(2), torch.ones(2, dtype=torch.float64), dtype=True)


def test_check_sequences_and_dicts_say_where():
    with pytest.raises(CheckFailed, match=r"first difference at position 2: expected 5, got 4"):
        check("order", [1, 2, 4], [1, 2, 5])
    with pytest.raises(CheckFailed, match=r"expected 3 items, got 2"):
        check("order", [1, 2], [1, 2, 3])
    with pytest.raises(CheckFailed, match=r"at key 'channels': expected 448, got 400"):
        check("predict_dfcs(3)", {"DFCs": 12, "channels": 400}, {"DFCs": 12, "channels": 448})
    with pytest.raises(CheckFailed, match=r"missing \['coupled'\]"):
        check("predict_dfcs(3)", {"DFCs": 12}, {"DFCs": 12, "coupled": 3})
    with pytest.raises(CheckFailed, match=r"expected a list, got a tuple"):
        check("channels", (1, 2), [1, 2], dtype=True)
    with pytest.raises(CheckFailed, match=r"expected a float \(0\.5\), got a int"):
        check("tv", 1, 0.5, dtype=True)


def test_check_rejects_bad_arguments():
    with pytest.raises(TypeError, match="'what'"):
        check("", 1, 1)
    with pytest.raises(ValueError, match="tolerances"):
        check("x", 1.0, 1.0, rtol=-1)


def test_checking_turns_a_blank_hole_into_one_line(capsys):
    ran = []
    with checking("q01_2"):
        ran.append("before")
        hole("q01_2", "count what pruning removes")
        ran.append("after")
    assert ran == ["before"]
    assert capsys.readouterr().out == ("q01_2 is not done yet: exercise q01_2 is blank "
                                       "(count what pruning removes)\n")
    with checking("q01_2"):
        undefined_function_of_the_student()  # noqa: F821
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "undefined_function_of_the_student" in out


def test_checking_lets_wrong_answers_fail():
    with pytest.raises(CheckFailed):
        with checking("q00_1"):
            check("n", 1, 2)
    with pytest.raises(ValueError, match="q<nb>_<k>"):
        with checking("one"):
            pass

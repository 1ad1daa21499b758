"""grpo.rollout.segmenters: each option's step ends on fixed strings (indices worked by hand), and bad settings."""

from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate

from grpo.rollout.segmenters import LineSteps, MarkerSteps, RegexSteps, check_segmenter
from grpo_testkit import compose_config

# lines start at 0, 7, 18 (blank), 19, 27
LINES = "7*3=21\n21+12=33  \n\n33-5=28\n#### 28"


def test_line_steps():
    # '1' of 21 (0+5); '3' of 33 before the trailing spaces (7+7); the blank line skipped; '8' (19+6); '8' (27+6)
    assert LineSteps()(LINES) == [5, 14, 25, 33]
    assert LineSteps()("") == [] and LineSteps()("\n \n") == []
    assert LineSteps()("a\n") == [0]


def test_marker_closing_steps():
    text = "7*3=21;21+12=33;33-5=28;A:28"
    assert MarkerSteps(";")(text) == [6, 15, 23, 27]  # each ';', then the answer's last character
    assert MarkerSteps(";")("7*3=21;;  ;A:21  ") == [6, 14]  # blank steps skipped; the tail ends before its spaces
    assert MarkerSteps(";")("7*3=21;") == [6]


def test_marker_opening_steps():
    #       0         1         2         3
    #       0123456789012345678901234567890123456
    text = "Let us see. Step 1: 12+5=17. Step 2: 17-3=14.\nStep 3:  "
    steps = MarkerSteps(r"Step \d+:", opens=True)
    # the preamble ends at '.' (10); step 1 at '.' (27); step 2 at '.' (44); "Step 3:" alone is blank: skipped
    assert steps(text) == [10, 27, 44]
    assert steps("Step 1: a") == [8]


def test_regex_steps():
    assert RegexSteps()("7*3=21;21+12=33\n#### 33") == [5, 14, 22]  # the default: text between newlines and ';'
    assert RegexSteps(r"\d+[-+*]\d+=\d+")("so 7*3=21, then 21+1=22 ok") == [8, 22]


def test_bad_settings_say_what_to_change():
    with pytest.raises(ValueError, match="not a valid regular expression"):
        RegexSteps("[unclosed")
    with pytest.raises(ValueError, match="matches the empty string"):
        MarkerSteps(";*")
    with pytest.raises(ValueError, match="steps=line"):
        check_segmenter("line")


@pytest.mark.parametrize("option, want", [("line", LineSteps()), ("marker", MarkerSteps(";")), ("regex", RegexSteps())])
def test_each_option_is_a_component(option, want, tmp_path):
    cfg = compose_config([f"steps={option}"], output_dir=tmp_path)
    assert instantiate(cfg.steps) == want


def test_unknown_segmentation_is_refused_naming_the_options(tmp_path):
    with pytest.raises(ConfigCompositionException, match="line"):
        compose_config(["steps=sentences"], output_dir=tmp_path)

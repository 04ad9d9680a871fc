"""The scheduling settings, the fair-share arithmetic and weights, the Python chooser's
rule on hand-picked cases, and the words "why is my job waiting" uses for a hold."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from hub.settings import HubSettings
from shared.config import ConfigError
from shared.job import Job, JobStatus
from shared.scheduling.chooser import Candidate, Context, choose, warm
from shared.scheduling.hold import describe_hold
from shared.scheduling.usage import Usage, load
from shared.settings import BrokerSettings

TOKENS = {"HUB_AUTH_TOKEN": "client-secret-1", "HUB_OPERATOR_TOKEN": "operator-secret-1"}
UNIT = 8796093022208  # submit_job.lua's score: (1000 - priority) * 2^43 + sequence


def cand(
    job: str,
    priority: int,
    seq: int,
    *,
    customer: str = "",
    warm: bool = False,
    fit_blocker: str | None = None,
    held_until: int | None = None,
) -> Candidate:
    return Candidate(
        job, (1000 - priority) * UNIT + seq, priority, customer, warm, fit_blocker, held_until
    )


# -- settings ------------------------------------------------------------------------------


def test_every_policy_is_on_by_default_and_none_turns_them_off() -> None:
    settings = BrokerSettings.from_env({})
    assert settings.scheduling_policies == ("fit", "affinity", "fair")
    strict = BrokerSettings.from_env({"SCHEDULING_POLICIES": "None"})
    assert strict.scheduling_policies == ()
    assert strict.scheduling_argument == ""  # the claim gets no scheduling argument
    assert (settings.affinity_window, settings.affinity_max_delay) == (10, 30.0)
    assert (settings.fit_max_delay, settings.fair_share_half_life) == (10.0, 300.0)


def test_policies_are_read_case_insensitively_in_the_order_they_apply() -> None:
    settings = BrokerSettings.from_env(
        {"SCHEDULING_POLICIES": "Affinity, fair,fit", "AFFINITY_MAX_DELAY_SECONDS": "12.5"}
    )
    assert settings.scheduling_policies == ("fit", "affinity", "fair")
    assert settings.scheduling_argument == "fit,affinity,fair|10|12500|10000|300000|16"


def test_none_with_a_policy_is_an_error_naming_the_setting() -> None:
    with pytest.raises(ConfigError) as info:
        BrokerSettings.from_env({"SCHEDULING_POLICIES": "none,fit"})
    assert info.value.name == "SCHEDULING_POLICIES"
    assert "'none'" in str(info.value)


def test_an_unknown_policy_names_the_setting() -> None:
    with pytest.raises(ConfigError) as info:
        BrokerSettings.from_env({"SCHEDULING_POLICIES": "affinity,fastest"})
    assert info.value.name == "SCHEDULING_POLICIES"
    assert "'fastest'" in str(info.value)


def test_policies_set_in_code_are_checked_and_ordered_too() -> None:
    assert replace(
        BrokerSettings(), scheduling_policies=("affinity", "fit")
    ).scheduling_policies == (
        "fit",
        "affinity",
    )
    with pytest.raises(ConfigError):
        replace(BrokerSettings(), scheduling_policies=("nope",))
    text: Any = "fair,affinity"  # a string, as a caller might pass one
    from_text = replace(BrokerSettings(), scheduling_policies=text)
    assert from_text.scheduling_policies == ("affinity", "fair")


def test_fair_share_weights_come_from_the_tiers() -> None:
    s = HubSettings.from_env(
        {
            **TOKENS,
            "CUSTOMER_TIERS": "premium=20,default=0,batch=-10",
            "HUB_CUSTOMERS": "acme=premium,lab=batch",
            "FAIR_SHARE_WEIGHTS": "premium=4,default=2",
        }
    )
    # lab's tier names no weight: 1; customers in no tier weigh as the default tier.
    assert s.priority.fair_share_weights() == {"acme": 4.0, "lab": 1.0, "*": 2.0}


@pytest.mark.parametrize(
    ("weights", "needle"),
    [("gold=2", "unknown tier 'gold'"), ("premium=x", "not a number"), ("premium=0", "outside")],
)
def test_bad_weights_name_the_setting(weights: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        HubSettings.from_env(
            {**TOKENS, "CUSTOMER_TIERS": "premium=20", "FAIR_SHARE_WEIGHTS": weights}
        )
    assert info.value.name == "FAIR_SHARE_WEIGHTS"
    assert needle in str(info.value)


# -- usage ---------------------------------------------------------------------------------


def test_usage_halves_every_half_life_and_adds_what_is_charged() -> None:
    usage = Usage(8.0, 1_000)
    assert usage.at(1_000 + 300_000, 300_000) == pytest.approx(4.0)
    assert usage.at(1_000 + 600_000, 300_000) == pytest.approx(2.0)
    assert usage.at(0, 300_000) == 8.0  # a clock step back counts as no time
    charged = usage.charged(1.5, 1_000 + 300_000, 300_000)
    assert charged.value == pytest.approx(5.5)
    assert charged.at_ms == 301_000


def test_stored_usage_parses_and_damage_is_no_usage() -> None:
    assert Usage.parse("2.500000|1700") == Usage(2.5, 1700)
    assert Usage.parse(None) == Usage.parse("garbage|x") == Usage(0.0, 0)


def test_load_is_usage_per_weight() -> None:
    assert load(10.0, 4.0) == 2.5
    assert load(10.0, 0.0) == 10.0  # a weight of 0 counts as 1


# -- the rule ------------------------------------------------------------------------------


def test_warm_means_some_models_all_loaded() -> None:
    assert warm(["sdxl"], {"sdxl", "flux"})
    assert not warm(["sdxl", "lora-x"], {"sdxl"})
    assert not warm([], {"sdxl"})


def test_affinity_prefers_warm_within_the_window_and_names_who_it_passed_over() -> None:
    cold, warm_one = cand("cold", 50, 1), cand("warm", 45, 2, warm=True)
    choice = choose([cold, warm_one], Context(frozenset({"affinity"}), 10, 0))
    assert choice is not None
    assert (choice.chosen.job, choice.held, choice.overdue) == ("warm", {"cold": "affinity"}, False)
    outside = choose([cold, warm_one], Context(frozenset({"affinity"}), 4, 0))
    assert outside is not None
    assert outside.chosen.job == "cold"


def test_an_overdue_job_goes_first_whatever_the_policies() -> None:
    candidates = [
        cand("warm", 50, 1, warm=True),
        cand("late", 50, 2, held_until=1_000),
        cand("later", 50, 3, held_until=900),
    ]
    choice = choose(candidates, Context(frozenset({"affinity", "fair"}), 10, 1_000))
    assert choice is not None
    assert (choice.chosen.job, choice.overdue) == ("late", True)  # strict order among overdue


def test_fair_share_picks_the_lightest_customer_then_strict_order() -> None:
    candidates = [cand("h0", 50, 1, customer="heavy"), cand("l0", 50, 2, customer="light")]
    loads = {"heavy": 5.0, "light": 1.0}
    choice = choose(candidates, Context(frozenset({"fair"}), 10, 0, loads))
    assert choice is not None
    assert (choice.chosen.job, choice.held) == ("l0", {"h0": "fair"})


def test_affinity_chooses_before_fair_share_among_the_warm_jobs() -> None:
    # The lightest customer's job is cold: the worker keeps its warm jobs, then takes the
    # lighter customer's among those.
    candidates = [
        cand("light-cold", 50, 1, customer="light"),
        cand("heavy-warm", 50, 2, customer="heavy", warm=True),
        cand("mid-warm", 50, 3, customer="mid", warm=True),
    ]
    loads = {"heavy": 5.0, "mid": 2.0, "light": 1.0}
    choice = choose(candidates, Context(frozenset({"affinity", "fair"}), 10, 0, loads))
    assert choice is not None
    assert (choice.chosen.job, choice.held) == (
        "mid-warm",
        {"light-cold": "affinity", "heavy-warm": "fair"},
    )


def test_fit_leaves_jobs_to_smaller_idle_workers_even_when_nothing_is_left() -> None:
    small = cand("small", 50, 1, fit_blocker="w-24gb")
    big = cand("big", 50, 2)
    choice = choose([small, big], Context(frozenset({"fit"}), 10, 0))
    assert choice is not None
    assert (choice.chosen.job, choice.held, choice.nothing_taken) == (
        "big",
        {"small": "fit"},
        False,
    )
    # Only jobs a smaller idle worker can run: this worker takes none of them (the claim
    # answers 'empty' until the strict-order best's bound), and they all count as held.
    alone = choose([small], Context(frozenset({"fit"}), 10, 0))
    assert alone is not None
    assert (alone.chosen.job, alone.held, alone.nothing_taken) == ("small", {"small": "fit"}, True)


# -- why is my job waiting ---------------------------------------------------------------


def held_job(
    held_by: str | None = None,
    held_at: int | None = None,
    held_since: int | None = None,
    held_until: int | None = None,
) -> Job:
    return Job(
        id="j", service_type="sim", priority=50, effective_priority=50,
        status=JobStatus.PENDING, created_at=0, held_by=held_by, held_at=held_at,
        held_since=held_since, held_until=held_until,
    )  # fmt: skip


def test_a_bounded_hold_says_until_when() -> None:
    job = held_job(held_by="affinity", held_at=5_000, held_since=1_000, held_until=31_000)
    hold = describe_hold(job, 11_000)
    assert hold is not None
    assert (hold["policy"], hold["remaining_seconds"]) == ("affinity", 20.0)
    assert "taken by 1970-01-01T00:00:31.000Z at the latest (20 s left)" in hold["message"]
    overdue = describe_hold(job, 40_000)
    assert overdue is not None
    assert "the next claim that can run it takes it first" in overdue["message"]


def test_fair_share_has_no_bound_and_no_hold_is_none() -> None:
    hold = describe_hold(held_job(held_by="fair", held_at=5_000), 6_000)
    assert hold is not None
    assert (hold["until"], hold["remaining_seconds"]) == (None, None)
    assert "its customer has used more than its share" in hold["message"]
    assert describe_hold(held_job(), 6_000) is None

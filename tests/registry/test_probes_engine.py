import time

import pytest

from registry import probes
from registry.probes import Answer, Rule, Target, answers_agree, compare_group, top_k_overlap
from tests.registry.model_servers import closed_port_url, model_servers_fixture  # noqa: F401

INPUTS = [("g/0", {"x": 0}), ("g/1", {"x": 1}), ("g/2", {"x": 2})]


def probe(targets, timeout=0.3):
    return probes.probe_targets(targets, path="/predict", timeout=timeout, max_workers=4)


# --- comparison rules ---


def test_exact_rule_needs_equal_json():
    assert answers_agree({"label": "cat"}, {"label": "cat"}, Rule("exact"))
    assert not answers_agree({"label": "cat"}, {"label": "dog"}, Rule("exact"))


def test_tolerance_rule_accepts_scores_within_abs_tolerance():
    rule = Rule("tolerance", abs_tolerance=0.01)

    assert answers_agree({"score": 0.5, "label": "a"}, {"score": 0.505, "label": "a"}, rule)
    assert not answers_agree({"score": 0.5}, {"score": 0.52}, rule)


def test_tolerance_rule_accepts_relative_difference():
    rule = Rule("tolerance", rel_tolerance=0.01)

    assert answers_agree([1000.0, 2.0], [1009.0, 2.0], rule)
    assert not answers_agree([1000.0], [1011.0], rule)


def test_tolerance_rule_still_compares_non_numbers_exactly():
    rule = Rule("tolerance", abs_tolerance=1)

    assert not answers_agree({"score": 1, "label": "a"}, {"score": 1, "label": "b"}, rule)
    assert not answers_agree([1, 2], [1, 2, 3], rule)
    assert not answers_agree(True, 1, rule)


def test_top_k_overlap_counts_shared_items_among_first_k():
    assert top_k_overlap(["a", "b", "c", "d"], ["b", "a", "x", "d"], 3) == pytest.approx(2 / 3)
    assert top_k_overlap({"items": [1, 2]}, {"items": [2, 1]}, 2) == 1.0
    assert top_k_overlap("a", ["a"], 1) is None


def test_top_k_rule_uses_min_overlap_threshold():
    rule = Rule("top_k", top_k=4, min_overlap=0.75)

    assert answers_agree(["a", "b", "c", "d"], ["a", "b", "c", "z"], rule)
    assert not answers_agree(["a", "b", "c", "d"], ["a", "b", "y", "z"], rule)


# --- comparison of a group ---


def ok(output):
    return Answer("ok", output, 5.0)


def test_compare_group_finds_the_odd_one_out_by_majority():
    answers = {1: {"q": ok("cat")}, 2: {"q": ok("cat")}, 3: {"q": ok("dog")}}

    found = compare_group(answers, inputs=[("q", {}, None)], rule=Rule())

    assert [found[k].verdict for k in (1, 2, 3)] == ["consistent", "consistent", "divergent"]
    assert found[3].first_difference == {
        "input": "q",
        "reference": "majority",
        "expected": "cat",
        "got": "dog",
    }


def test_compare_group_prefers_expected_output_over_majority():
    answers = {1: {"q": ok("cat")}, 2: {"q": ok("cat")}, 3: {"q": ok("dog")}}

    found = compare_group(answers, inputs=[("q", {}, "dog")], rule=Rule())

    assert [found[k].verdict for k in (1, 2, 3)] == ["divergent", "divergent", "consistent"]


def test_compare_group_without_majority_marks_every_answer_divergent():
    answers = {1: {"q": ok("cat")}, 2: {"q": ok("dog")}}

    found = compare_group(answers, inputs=[("q", {}, None)], rule=Rule())

    assert {f.verdict for f in found.values()} == {"divergent"}
    assert found[1].first_difference["reference"] == "no majority"


def test_compare_group_keeps_faults_out_of_the_vote():
    answers = {
        1: {"q": ok("cat")},
        2: {"q": Answer("timeout", latency_ms=300.0, detail="no answer")},
        3: {"q": Answer("bad_response", latency_ms=2.0)},
    }

    found = compare_group(answers, inputs=[("q", {}, None)], rule=Rule())

    assert [found[k].verdict for k in (1, 2, 3)] == ["consistent", "timeout", "bad_response"]


def test_compare_group_ignores_non_voters_when_choosing_the_reference():
    answers = {1: {"q": ok("cat")}, 2: {"q": ok("dog")}, 3: {"q": ok("dog")}}

    found = compare_group(answers, inputs=[("q", {}, None)], rule=Rule(), voters={1})

    assert [found[k].verdict for k in (1, 2, 3)] == ["consistent", "divergent", "divergent"]


# --- real HTTP ---


def test_probe_targets_reads_answers_from_real_servers(model_servers):
    a, b = model_servers("A", "B")

    answers = probe([Target("a", a.url, INPUTS), Target("b", b.url, INPUTS)])

    assert answers["a"]["g/1"].status == "ok"
    assert answers["a"]["g/1"].output == {"label": "odd", "score": 0.5}
    assert answers["b"]["g/1"].output == {"label": "even", "score": 0.7}
    assert a.requests[0] == ("/predict", {"inputs": {"x": 0}})


def test_probe_of_three_servers_finds_the_one_serving_another_model(model_servers):
    servers = model_servers("A", "A", "B")
    targets = [Target(i, s.url, INPUTS) for i, s in enumerate(servers)]

    found = compare_group(probe(targets), inputs=[(n, p, None) for n, p in INPUTS], rule=Rule())

    assert [found[i].verdict for i in range(3)] == ["consistent", "consistent", "divergent"]
    assert found[2].first_difference["input"] == "g/0"


def test_probe_reports_stopped_server_as_unreachable(model_servers):
    (server,) = model_servers("A")
    server.stop()

    answers = probe([Target("x", server.url, INPUTS)])

    assert answers["x"]["g/0"].status == "unreachable"
    assert len(answers["x"]) == 1  # the first fault ends that replica's run


def test_probe_reports_refused_connection_as_unreachable():
    answers = probe([Target("x", closed_port_url(), INPUTS)])

    assert answers["x"]["g/0"].status == "unreachable"


def test_probe_cuts_a_slow_server_at_the_timeout(model_servers):
    (slow,) = model_servers("slow", delay=2.0)
    started = time.monotonic()

    answers = probe([Target("x", slow.url, INPUTS)], timeout=0.3)

    assert answers["x"]["g/0"].status == "timeout"
    assert time.monotonic() - started < 1.0
    assert 250 <= answers["x"]["g/0"].latency_ms < 1000


def test_probe_reports_http_500_as_error(model_servers):
    (server,) = model_servers("500")

    answer = probe([Target("x", server.url, INPUTS)])["x"]["g/0"]

    assert (answer.status, answer.detail) == ("error", "HTTP 500")


def test_probe_reports_malformed_json_as_bad_response(model_servers):
    (server,) = model_servers("garbage")

    answer = probe([Target("x", server.url, INPUTS)])["x"]["g/0"]

    assert (answer.status, answer.detail) == ("bad_response", "answer is not JSON")


def test_probe_reports_json_without_outputs_as_bad_response(model_servers):
    (server,) = model_servers("no-outputs")

    answer = probe([Target("x", server.url, INPUTS)])["x"]["g/0"]

    assert answer.status == "bad_response"


def test_probe_of_replica_without_url_is_unreachable():
    answers = probe([Target("x", "", INPUTS)])

    assert answers["x"][""].status == "unreachable"


def test_probe_runs_replicas_in_parallel(model_servers):
    servers = model_servers("slow", "slow", "slow", "slow", delay=0.2)
    started = time.monotonic()

    probe([Target(i, s.url, INPUTS[:1]) for i, s in enumerate(servers)], timeout=1.0)

    assert time.monotonic() - started < 0.6  # four 0.2 s answers, four workers


def test_compare_group_without_voters_has_no_reference():
    answers = {1: {"q": ok("cat")}}

    found = compare_group(answers, inputs=[("q", {}, None)], rule=Rule(), voters=set())

    assert found[1].first_difference["reference"] == "no majority"


def test_probe_refuses_urls_other_than_http():
    assert probe([Target("x", "file:///etc", INPUTS)])["x"]["g/0"].status == "unreachable"


def test_probe_reports_a_redirect_as_error_without_following_it(model_servers):
    (server,) = model_servers("redirect")

    answer = probe([Target("x", server.url, INPUTS)])["x"]["g/0"]

    assert (answer.status, answer.detail) == ("error", "HTTP 307")


def test_probe_ignores_proxy_settings_from_the_environment(model_servers, monkeypatch):
    (server,) = model_servers("A")
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")  # would refuse every request

    assert probe([Target("x", server.url, INPUTS)])["x"]["g/0"].status == "ok"


def test_probe_stops_at_the_time_budget_of_the_run(model_servers):
    (slow,) = model_servers("slow", delay=0.15)
    started = time.monotonic()

    answers = probes.probe_targets(
        [Target("x", slow.url, INPUTS)], path="/predict", timeout=1.0, max_workers=1, budget=0.2
    )["x"]

    assert time.monotonic() - started < 0.6
    assert answers["g/0"].status == "ok"
    last = list(answers.values())[-1]
    assert last.status == "timeout"
    assert "budget" in last.detail or "no answer" in last.detail

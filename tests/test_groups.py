"""Answer groups (`grader.review.groups`): the pure policy. End to end (workbook, import, flag,
calibration) in tests/test_groups_e2e.py."""

from __future__ import annotations

from grader.review.groups import FLAG, Answer, Figures, figures, group, inconsistent

TCP = "TCP uses a three-way handshake: SYN, SYN-ACK and ACK before any data is sent."
UDP = "UDP sends datagrams without a connection, so packets may be lost or reordered."
DNS = "DNS maps host names to IP addresses through a hierarchy of name servers."


def _answers(texts: dict[str, str], totals: dict[str, float] | None = None) -> list[Answer]:
    return [Answer(sid, t, total=(totals or {}).get(sid)) for sid, t in texts.items()]


def test_byte_identical_answers_share_a_group_even_at_the_strictest_threshold() -> None:
    groups = group(_answers({"a": TCP, "b": UDP, "c": TCP, "d": TCP}), threshold=1.01)
    assert [(g.label, g.members) for g in groups] == [("G1", ("a", "c", "d")),
                                                      ("G2", ("b",))]


def test_near_identical_answers_share_a_group_and_different_ones_do_not() -> None:
    near = TCP.replace("before any data is sent", "before data is sent")
    groups = group(_answers({"a": TCP, "b": near, "c": UDP, "d": DNS,
                             "e": TCP.lower()}), threshold=0.6)
    assert sorted(g.members for g in groups) == [("a", "b", "e"), ("c",), ("d",)]
    assert groups[0].label == "G1" and groups[0].size == 3
    assert groups[0].representative in ("a", "b", "e")


def test_the_representative_is_the_member_nearest_the_centre() -> None:
    base = "the handshake opens a connection with syn then syn ack then ack"
    texts = {"x1": base + " quickly", "x2": base, "x3": base + " reliably"}
    (g,) = group(_answers(texts), threshold=0.5)
    assert g.representative == "x2"  # the plain one sits between the two variants


def test_grouping_is_deterministic_whatever_the_input_order() -> None:
    texts = {"a": TCP, "b": TCP + " Then data flows.", "c": UDP, "d": DNS, "e": UDP + " Fast."}
    one = group(_answers(texts), threshold=0.5)
    two = group(list(reversed(_answers(texts))), threshold=0.5)
    assert one == two


def test_a_member_graded_apart_from_its_group_is_flagged_with_the_others_scores() -> None:
    texts = {"a": TCP, "b": TCP, "c": TCP + " Really.", "d": UDP, "e": UDP + " Yes."}
    answers = _answers(texts, {"a": 1.0, "b": 1.0, "c": 4.0, "d": 2.0, "e": 2.5})
    groups = group(answers, threshold=0.6)
    flags = inconsistent(groups, answers, max_total=4.0, max_gap=0.25)
    assert set(flags) == {"c"}  # 0.5 apart of 4 is within 0.25; 3 apart is not
    assert flags["c"].reason == FLAG
    assert "a 1, b 1" in flags["c"].message and "median 1" in flags["c"].message


def test_two_members_graded_two_ways_are_both_flagged() -> None:
    answers = _answers({"a": TCP, "b": TCP}, {"a": 0.0, "b": 4.0})
    flags = inconsistent(group(answers, 0.6), answers, max_total=4.0, max_gap=0.25)
    assert set(flags) == {"a", "b"}


def test_purity_is_the_share_holding_their_groups_most_common_label() -> None:
    answers = _answers({"a": TCP, "b": TCP, "c": TCP, "d": UDP, "e": DNS})
    groups = group(answers, 0.6)
    # e has no human score: neither it nor its group counts
    got = figures(groups, {"a": 1.0, "b": 1.0, "c": 0.5, "d": 0.0})
    # two groups, three of four members agree with their group; decisions: one per group
    # plus c's own
    assert got == Figures(groups=2, students=4, agreeing=3, decisions=3)
    assert got.purity == 0.75

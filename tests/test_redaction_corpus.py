"""Redaction holds on the corpus of issue 27 item 1 (tests/fixtures/redaction_corpus.toml):
every spelling of a roster name, e-mail, id and phone number students wrote is replaced, and the
ordinary words that collide with the roster's names ("I will", "May 2026", "the price") are
left; through `grade run`, nothing of it reaches the fake Gemini server."""

from __future__ import annotations

from pathlib import Path

import pytest
from _redaction_corpus import leaks, load, score

from grader.intake.redact import Redactor, restore
from grader.testing._fake_content import read_prompt
from grader.testing.fake_gemini import FakeGemini

from _cli import generated, grade

RUBRIC = Path(__file__).resolve().parent.parent / "rubrics" / "intro-python.yaml"
CORPUS = load()
ZOE, WILL, MAY, SEAN, MARK = (r["id"] for r in CORPUS.roster)


@pytest.fixture(scope="module")
def redactor() -> Redactor:
    return Redactor(CORPUS.students(), other_ids=CORPUS.other_ids())


def test_the_corpus_is_redacted_and_ordinary_words_survive(redactor: Redactor) -> None:
    s = score(CORPUS, lambda text: redactor.redact([text], ZOE)[0][0])
    assert [(v.text, sent) for v, sent, _ in s.misses if not v.known_miss] == []
    assert [(o.text, sent) for o, sent, _ in s.wrong] == []
    # the misses the corpus expects are still misses: the rule for ordinary words has a price
    assert {v.text for v, _, _ in s.misses} == {v.text for v in CORPUS.variants if v.known_miss}


def test_every_spelling_of_one_person_or_address_gets_one_placeholder(
        redactor: Redactor) -> None:
    (text,), mapping = redactor.redact(
        ["Zoë Åberg-Łukasiewicz (aberg-lukasiewicz; Z. Åberg; Aberg's) mailed x.aberg(at)uni.edu"
         " and x dot aberg at uni dot edu; Will Turner; will turner; Will T. replied."], ZOE)
    assert text == ("[STUDENT_1] ([STUDENT_1]; [STUDENT_1]; [STUDENT_1]'s) mailed [EMAIL_1]"
                    " and [EMAIL_1]; [STUDENT_2]; [STUDENT_2]; [STUDENT_2] replied.")
    assert mapping["[STUDENT_1]"] == "Zoë Åberg-Łukasiewicz"
    assert mapping["[STUDENT_2]"] == "Will Turner"
    assert restore("[STUDENT_2] thanks [STUDENT_1]", mapping) == \
        "Will Turner thanks Zoë Åberg-Łukasiewicz"


def test_a_number_labelled_once_is_redacted_in_every_file_of_the_submission(
        redactor: Redactor) -> None:
    texts, mapping = redactor.redact(["Matrikelnummer: 7654321", "see 7654321 and 7654320",
                                      "report.7654321.pdf"], ZOE)
    assert texts == ["Matrikelnummer: [ID_1]", "see [ID_1] and 7654320", "report.[ID_1].pdf"]
    assert mapping["[ID_1]"] == "7654321"
    # another submission never labelled it: there it is an ordinary number
    assert redactor.redact(["see 7654321"], WILL)[0] == ["see 7654321"]
    # a roster id is redacted everywhere, labelled or not
    assert redactor.redact([f"row {MARK}"], WILL)[0] == ["row [ID_1]"]


def test_common_word_names_are_names_only_beside_the_rest_of_the_name(
        redactor: Redactor) -> None:
    def sent(text: str) -> str:
        return redactor.redact([text], ZOE)[0][0]

    assert sent("May Chen; Chen, May; May C.") == "[STUDENT_2]; [STUDENT_2]; [STUDENT_2]"
    assert sent("Chen, May 2026") == "[STUDENT_2], May 2026"  # a date, not her given name
    assert sent("Turner will win; Mr Price; M. Price; Mark Price") == \
        "[STUDENT_2] will win; Mr [STUDENT_3]; [STUDENT_3]; [STUDENT_3]"
    assert sent("Mark it. The price will rise in May. mark price") == \
        "Mark it. The price will rise in May. mark price"


def test_nothing_of_the_corpus_reaches_the_model_through_grade_run(
        gemini_env: FakeGemini, tmp_path: Path) -> None:
    class_dir = tmp_path / "class"
    class_dir.mkdir()
    (class_dir / "roster.csv").write_text(CORPUS.roster_csv(), encoding="utf-8")
    work = "\n\n".join([*(v.text for v in CORPUS.variants), *(o.text for o in CORPUS.ordinary)])
    for r in CORPUS.roster:
        (class_dir / f"{r['id']}.txt").write_text(work, encoding="utf-8")
    code, output = grade("run", str(class_dir), "--rubric", str(RUBRIC), "--out",
                         str(tmp_path / "out"), "--db", str(tmp_path / "g.sqlite"))
    assert code == 0, output
    sent = [read_prompt(r["body"]).user_text for r in generated(gemini_env)]
    assert len(sent) == len(CORPUS.roster)
    for text in sent:
        for tag in ("[STUDENT_1]", "[STUDENT_5]", "[EMAIL_", "[ID_", "[PHONE_"):
            assert tag in text
        # the ordinary sentences, and the variants left on purpose, go out as written ...
        for kept in [*(o.text for o in CORPUS.ordinary),
                     *(v.text for v in CORPUS.variants if v.known_miss)]:
            assert kept in text
            text = text.replace(kept, "")
        # ... and nothing else of the corpus's personal data does
        assert [(v.text, leaks(v, text)) for v in CORPUS.variants
                if not v.known_miss and leaks(v, text)] == []
    # every roster e-mail and full name, in any form, stays home
    everything = "\n".join(sent)
    for r in CORPUS.roster:
        assert r["email"] not in everything and r["name"] not in everything


def test_an_id_written_with_separators_is_redacted_in_each_spelling() -> None:
    # an SIS id from the LMS export ("SIS-99812"): a text's words never hold it whole
    redactor = Redactor(CORPUS.students(), other_ids={ZOE: ["SIS-99812", "u.2024.77"]})
    (text,), _ = redactor.redact(
        ["My id: SIS-99812 (sis-99812, SIS99812, SIS 99812, in SIS_99812_essay.pdf); account"
         " u.2024.77. Not SIS-998120 or 99812."], ZOE)
    assert "99812" not in text.split("Not")[0] and "2024.77" not in text, text
    assert text.endswith("Not SIS-998120 or 99812."), text  # another number, and a part alone
    assert text.count("[ID_") == 6, text
    assert text.count("[ID_1]") == 5, text  # one id, one placeholder, however it is written


def test_a_user_name_spelled_as_a_word_and_an_address_after_a_percent_escape_are_redacted(
        ) -> None:
    redactor = Redactor(CORPUS.students(), other_ids={ZOE: ["zaberg"], WILL: ["will"]})
    (text,), _ = redactor.redact(
        ["Logged in as zaberg; ssh ZABERG@lab01. I will push. "
         "Link: mailto%3Ajane.smith%40gmail.com; I am 100%jane.smith@gmail.com"], ZOE)
    assert "zaberg" not in text.lower() and "jane" not in text and "gmail" not in text, text
    assert text.endswith("I am 100%[EMAIL_1]"), text  # one address, one placeholder
    # after a bare %, also where its next two letters read as hex ("%da"); a format string is
    # not an address, and student code keeps it
    code = 'to = "%s@gmail.com" % user; printf("%d@example.com"); "%s at example.com" % u'
    (more,), _ = redactor.redact([f"100%dave.smith@uni.edu, 100%Ada.Lovelace@uni.edu. {code}"],
                                 ZOE)
    assert more == f"100%[EMAIL_1], 100%[EMAIL_2]. {code}", more
    assert "I will push" in text  # a user name that is an ordinary word is not one


def test_a_name_in_a_script_without_spaces_is_found_inside_running_text() -> None:
    from grader.intake.discover import Submission
    redactor = Redactor([Submission(student_id="s1", name="王小明"),
                         Submission(student_id="s2", name="김민수")])
    sent = "我是王小明。王小明的答案；小明说。김민수는 학생입니다."
    (text,), mapping = redactor.redact([sent], "s1")
    assert text == "我是[STUDENT_1]。[STUDENT_1]的答案；小明说。[STUDENT_2]는 학생입니다."
    assert restore(text, mapping).startswith("我是王小明。")

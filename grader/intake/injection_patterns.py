"""The phrase patterns behind `grader.intake.injection`: text in a submission that speaks to
the grader.

Data only, compiled once at import. Each `Rule` has `anchors`, lower-case words that start a
match, and a regex that is tried only *at* each place an anchor occurs (`regex.match(text, i)`):
a submission costs one substring search per distinct anchor plus one anchored match per
occurrence, never a scan of the whole text per rule. So every alternative of a regex must begin
with one of its rule's anchors (lookbehinds may check what comes before). English rules run on
a "skeleton" in which look-alike letters are mapped to ASCII; the rules for other languages run
on the lower-cased text itself (their letters are the look-alikes).

Kinds: `override` (ignore the instructions), `score` (give full marks, do not flag for review),
`role` (system-prompt or chat-role imitation, notes addressed to the AI), `fake_rubric` (fake
rubric, score or output blocks), `claim` (claims that the grade was already approved).
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Rule:
    name: str
    kind: str
    anchors: tuple[str, ...]
    regex: re.Pattern[str]
    english: bool = True  # runs on the ASCII skeleton; False: on the lower-cased text


SEP = r"[\W_]{1,80}"  # separators between words (a file or page boundary fits in 80)
W = r"[^\W_]+"  # one word


def gap(n: int) -> str:
    """Up to `n` words between two parts of a phrase."""
    return rf"(?:{SEP}{W}){{0,{n}}}{SEP}"


def words(text: str) -> tuple[str, ...]:
    return tuple(text.split("|"))


def _rule(name: str, kind: str, anchors: tuple[str, ...], pattern: str, *,
          english: bool = True) -> Rule:
    return Rule(name, kind, anchors, re.compile(pattern, re.MULTILINE), english)


# Line starts, allowing a few leading marks (`# `, `> `, `- `, `* `, `// `).
LINE = r"(?:^|(?<=^[ \t>*#/-])|(?<=^[ \t>*#/-]{2})|(?<=^[ \t>*#/-]{3}))"

_OVERRIDE = ("ignore|ignores|ignoring|disregard|disregards|disregarding|forget|forgetting|"
             "override|overriding|overrule|overruling|bypass|bypassing|discard|discarding|"
             "abandon|abandoning|set aside|stop following|do not follow|don't follow|"
             "dont follow|no longer follow")
_OVERRIDE_RE = (r"(?:ignor(?:e|es|ing)|disregard(?:s|ing)?|forget(?:ting)?|overrid(?:e|ing)|"
                r"overrul(?:e|ing)|bypass(?:ing)?|discard(?:ing)?|abandon(?:ing)?|set aside|"
                r"stop following|do not follow|don'?t follow|no longer follow)")
_ANTERIOR = (r"(?:previous|prior|preceding|above|earlier|foregoing|original|initial|existing|"
             r"your|system|grader'?s?|grading|marking)")
_RULES = (r"(?:instruction|direction|prompt|rule|guideline|rubric|criteria|criterion|scheme|"
          r"directive)s?")
_GIVE = "give|giving|award|assign|grant|mark|grade|score|rate|output|allocate"
_HIGH = (r"(?:(?:full|maximum|max|maximal|perfect|top|highest|the highest|the maximum|the best|"
         r"best possible|all(?: the| of the)?|every)\s+(?:marks?|points?|scores?|grades?|"
         r"credits?)|full credit|full marks|an?\s+[\"'“]?a\+?[\"'”]?\s+grade|a\+|"
         r"100\s?%|100 percent|\d{1,3}\s?/\s?\d{1,3}(?![/\d])|\d{1,3} out of \d{1,3}|"
         r"ten out of ten|(?:the\s+)?(?:top|highest|best|maximum|first)\s+(?:mark\s+|grade\s+"
         r"|score\s+)?(?:band|bracket|tier|grade|mark)s?\b)")
_SELF = (r"(?:me|us|it|this|this (?:student|submission|essay|answer|work|code|assignment|"
         r"solution|report|paper|notebook|program|file|project|response|entry)|"
         r"my (?:work|submission|essay|answer|code|assignment|solution|report|paper|project))")
_AIWORDS = ("grader|marker|ai|a.i.|model|assistant|llm|gemini|chatgpt|gpt|claude|evaluator|"
            "examiner|reviewer|bot")
_STRONG = (r"(?:please|pls|kindly|just|simply|you (?:must|should|will|shall|need to|have to|"
           r"are to|are required to|are instructed to)|(?:grader|marker|ai|a\.i\.|model|"
           r"assistant|llm|gemini|chatgpt|gpt|claude|evaluator|examiner|reviewer|bot)\s*[,:])")
# An imperative at the start of a sentence, line or comment, or after "and"/"then".
_IMPERATIVE = (r"(?:^|(?<=[.!?;:#/*>\n-])|(?<=[.!?;:#/*>\n-] )|(?<=[.!?;:#/*>\n-]  )|"
               r"(?<=\band )|(?<=\bthen )|(?<=\balso )|(?<=\bnow ))")
_AI = (r"(?:ai|a\.i\.|llm|language model|large language model|grader|grading (?:model|system|"
       r"ai|assistant|bot)|marker|ai model|ai assistant|evaluator|examiner|chatgpt|gpt|"
       r"gemini(?!\s+(?:api|developer|client|sdk|endpoint|server|service))|claude|bard|"
       r"copilot|automated (?:grader|marker|system|grading))")
# The machine grader, never a person: "a note to the grader" explains an edge case to whoever
# marks the work; "a note to the AI grader" speaks to the model.
_MACHINE = (r"(?:ai|a\.i\.|llm|language model|large language model|grading (?:model|system|"
            r"ai|assistant|bot)|ai (?:model|assistant|grader|marker|evaluator|examiner)|"
            r"chatgpt|gpt|gemini(?!\s+(?:api|developer|client|sdk|endpoint|server|service))|"
            r"claude|bard|copilot|automated (?:grader|marker|system|grading|evaluator|"
            r"examiner)|(?:grader|marker|evaluator|examiner)\s+(?:model|bot|ai|llm))")
_WORK = "submission|essay|answer|work|code|assignment|solution|report|paper|project"
_THIS_WORK = tuple(f"{who} {w}" for who in ("this", "my") for w in _WORK.split("|"))
_STAFF = r"(?:teacher|instructor|professor|lecturer|ta|tutor|department|school|examiner|staff)"

ENGLISH: tuple[Rule, ...] = (
    # --- override -------------------------------------------------------------------------
    _rule("ignore-previous", "override", words(_OVERRIDE),
          rf"\b{_OVERRIDE_RE}{gap(3)}{_ANTERIOR}{gap(2)}{_RULES}\b|"
          rf"\b{_OVERRIDE_RE}{gap(1)}(?:the|this|that)\s+(?:rubric|marking scheme|mark scheme|"
          r"grading criteria|grading instructions)\b"),
    _rule("ignore-all", "override", words(_OVERRIDE),
          rf"\b{_OVERRIDE_RE}{gap(2)}(?:all|any|every){gap(2)}(?:instruction|direction|prompt|"
          r"rule|guideline|directive)s?\b"),
    _rule("ignore-what-told", "override", words(_OVERRIDE),
          rf"\b{_OVERRIDE_RE}{SEP}(?:(?:all\s+|everything\s+|anything\s+)?(?:of\s+)?"
          r"(?:what|that|whatever)|everything|anything|all)(?:\s+(?:else|that))?\s+(?:you\s+|"
          r"the\s+(?:model|grader|ai|assistant)\s+)?(?:were|was|have been|had been|got|"
          r"received)\s+(?:told|asked|instructed|given|shown|said|taught|prompted)\b"),
    _rule("new-instructions", "override",
          words("new|updated|revised|real|actual|true|secret|hidden|overriding|override|"
                "priority|urgent"),
          r"\b(?:new|updated|revised|real|actual|true|secret|hidden|override|overriding|"
          r"priority|urgent)\s+(?:system\s+)?(?:instructions?|directives?|orders|prompt)"
          r"\s*[:\-–—]|\b(?:new|updated) system prompt\b"),
    _rule("role-change", "override",
          words("from now on|you are|pretend|act as|behave as|respond as|grade as|your new|"
                "your real|your actual|your true|your only|you must|you will|you shall|"
                "you should|you need to|you have to"),
          rf"\bfrom now on{SEP}(?:you|the grader|your)\b|\byou are no longer\b|"
          r"\byou are now (?:a|an|the|in|called|named|acting|operating|going to|required|free)"
          r"\b|\b(?:act|behave|respond|grade) as (?:if you were|though you were|an? "
          r"(?:lenient|generous|kind|nice|friendly) (?:grader|teacher|marker|examiner))|"
          r"\bpretend (?:that )?you(?:'re| are)\b|\byour (?:new|real|actual|true|only) "
          r"(?:task|role|job|goal|purpose|instructions?) (?:is|are)\b|\byou (?:must|will|shall|"
          r"should|need to|have to|are required to|are instructed to) (?:now )?(?:ignore|"
          r"disregard|forget|obey|follow (?:these|the following|my) instructions)\b"),
    # --- score demands --------------------------------------------------------------------
    _rule("give-full-marks", "score",
          words("please|pls|kindly|just|simply|you must|you should|you will|you shall|"
                f"you need to|you have to|you are|{_AIWORDS}|{_GIVE}"),
          rf"\b{_STRONG}{SEP}(?:{W}{SEP}){{0,2}}(?:{_GIVE})(?:{gap(4)}|{SEP}){_HIGH}|"
          rf"\b(?:{_GIVE}){SEP}{_SELF}{SEP}(?:{W}{SEP}){{0,2}}{_HIGH}|"
          rf"\b(?:{_GIVE})(?:{SEP}{W}){{0,3}}{SEP}{_HIGH}{SEP}(?:to|for){SEP}{_SELF}\b|"
          rf"{_IMPERATIVE}\b(?:{_GIVE}){SEP}{_HIGH}\s*(?:[.!]|$|,?\s*(?:please|regardless|"
          r"no matter|whatever|because|since|thanks|thank you))"),
    _rule("deserves-full-marks", "score", (*_THIS_WORK, "i deserve"),
          rf"\b(?:this|my)\s+(?:{_WORK})\s+(?:deserves|merits|earns|warrants|is worth|should "
          rf"(?:get|receive|be given|be awarded)|must (?:get|receive|be given|be awarded))"
          rf"{SEP}{_HIGH}|\bi deserve{SEP}{_HIGH}"),
    _rule("no-review", "score",
          words("needs_review|do not|don't|dont|never|no need to|no review|no human review"),
          r"needs_review[\"'`]?\s*(?:to|as|=|:|is|should be)?\s*[\"'`]?false|"
          r"\b(?:do not|don'?t|never|no need to)\s+(?:flag|report|escalate|send)\s+(?:this|my)"
          rf"\s+(?:{_WORK})\b|\b(?:do not|don'?t|never)\s+(?:flag|report|escalate)\s+"
          r"(?:me|it|this)\s+(?:for|to)\s+(?:review|a human|the teacher|the instructor)\b|"
          r"\bno (?:human )?review (?:is )?(?:needed|necessary|required)|\b(?:do not|don'?t|"
          r"never)\s+(?:deduct|subtract|take off|dock|penali[sz]e)\s+(?:any\s+)?(?:points|"
          r"marks|me|this|my)\b"),
    # --- role and system-prompt imitation ----------------------------------------------------
    _rule("chat-tokens", "role",
          ("<|", "[inst]", "[/inst]", "<<sys>>", "<</sys>>", "<start_of_turn>",
           "<end_of_turn>"),
          r"<\|(?:im_start|im_end|system|assistant|user|endoftext|begin_of_text|"
          r"start_header_id|end_header_id|eot_id)\|>|\[/?inst\](?![)\],])|<</?sys>>|"
          r"<(?:start|end)_of_turn>"),
    _rule("system-block", "role",
          words("##|<system|</system|< system|<instruction|</instruction|<admin|</admin|"
                "<developer|</developer|<sys>|</sys>|system|developer|admin|[system|[ system|"
                "[admin|[developer|[grader|[instruction|[ instruction|end of"),
          r"##{1,3}\s*(?:system|instructions?|response|assistant)\s*(?:prompt|message)?\s*:?"
          r"\s*$|</?\s*(?:system|instructions?|admin|developer|system_prompt|sys)\s*>|"
          r"\b(?:system|developer|admin|administrator)[ -]+(?:prompt|message|note|override|"
          r"instruction)s?\b\s*[:\]]|(?:(?<=begin )|(?<=begin_)|(?<=start )|(?<=start_)|"
          r"(?<=end )|(?<=end_)|(?<=end of )|(?<=end of the ))(?:system|developer|admin)[ _-]*"
          r"(?:prompt|message|instructions?)\b|\[\s*(?:system|admin|developer|grader|"
          r"instructions?)(?:\s+(?:note|message|prompt))?\s*\](?!\()|\bend of (?:the )?"
          r"(?:submission|student(?:'s)? (?:text|work|answer|submission))\b"),
    _rule("role-label", "role", words("system|assistant|developer"),
          rf"{LINE}(?:system|assistant|developer)\s*:\s*(?=[\s\S]{{0,200}}\b(?:score|grade|"
          r"marks?|points|instructions?|rubric|review|ignore|full|approve|correct|perfect|"
          r"lenient)\b)"),
    _rule("note-to-ai", "role",
          words("note|message|instruction|reminder|attention|memo|hint|dear|hello|hi|hey|"
                "if you|ai|automated|llm|machine"),
          rf"\b(?:note|message|instructions?|reminder|attention|memo|hint)\s+(?:to|for)"
          rf"\s+(?:the\s+|any\s+|an?\s+)?{_MACHINE}\b|\b(?:dear|hello|hi|hey|attention)\s*,?"
          r"\s+(?:ai|llm|gemini|chatgpt|gpt|claude|grading model|automated grader|ai grader|"
          r"ai model)\b|\bif you(?:'re| are)\s+(?:an?\s+)?"
          r"(?:ai|llm|large language model|language model|automated|bot|chatbot|gpt|grader|"
          r"grading|machine)\b(?!\s+(?:researcher|engineer|scientist|developer|student|"
          r"company|startup|enthusiast|practitioner|expert|user|model))|(?:(?<=to the )|"
          r"(?<=for the )|(?<=to any )|(?<=for any ))(?:ai|automated|llm|machine) (?:grader|"
          r"marker|evaluator|reader|reviewer|grading)\b"),
    # --- fake rubric, score and output blocks --------------------------------------------
    _rule("fake-output", "fake_rubric",
          words("needs_review|review_reason|overall_comment|score|justification"),
          r"(?<=[\"'])(?:needs_review|review_reason|overall_comment)[\"']\s*:|"
          r"(?<=[\"'])score[\"']\s*:[\s\S]{0,400}?[\"']justification[\"']\s*:|"
          r"(?<=[\"'])justification[\"']\s*:[\s\S]{0,400}?[\"']score[\"']\s*:"),
    _rule("fake-rubric", "fake_rubric",
          words("marking scheme|instructions to the grader|reference answer|graded examples|"
                "criterion|(max|score exactly|score|rubric|answer key|mark scheme|grading"),
          r"(?:(?<=#)|(?<=# )|(?<=#  ))(?:marking scheme|instructions to the grader|"
          r"reference answer|graded examples)\b|(?:(?<=#)|(?<=# ))criterion\s+`|"
          r"\(max\s+\d+(?:\.\d+)?\s+points?\)|score exactly one of these levels|"
          rf"{LINE}scores?\s*:\s*[a-z_]\w*\s*=\s*\d|(?:(?<=updated )|(?<=new )|(?<=revised )|"
          r"(?<=amended )|(?<=secret )|(?<=hidden ))(?:rubric|marking scheme|grading "
          r"(?:criteria|scheme|rubric|instructions)|answer key|reference answer|mark scheme)"
          r"\s*(?::|—|-|\bis\b|\bsays\b|\bstates\b|\brequires\b)|(?:rubric|marking scheme|"
          r"answer key|grading criteria)\s+(?:has|have)\s+(?:been\s+)?(?:updated|changed|"
          r"revised|replaced|amended)\b"),
    _rule("fake-verdict", "fake_rubric",
          words("ai|grader|grading|teacher|instructor|examiner|marker|official|assigned|"
                "awarded|recommended|verified"),
          r"(?:^|(?<=^[\W_])|(?<=^[\W_]{2})|(?<=^[\W_]{3}))(?:ai|grader|grading|teacher|"
          r"instructor|examiner|marker|official|assigned|awarded|recommended|verified)(?:'s)?"
          r"\s+(?:score|grade|mark|verdict|result|assessment|evaluation)s?\s*[:=]\s*(?:\d+"
          r"(?:\.\d+)?\s*(?:/|out of)\s*\d+|100\s*%|a\+?(?=\W|$)|full|perfect|pass(?:ed)?|"
          r"excellent)"),
    # --- claims ---------------------------------------------------------------------------
    _rule("fake-staff-note", "claim",
          words("grader|graders|grading|marker|markers|marking|examiner|examiners|assessor|"
                "staff|instructor|instructors|teacher|teachers|ta|tutor|moderator|reviewer|"
                "official|internal|trusted|verified"),
          r"(?:(?<=#)|(?<=# )|(?<=#  )|(?<=\*\*)|(?<=\[))(?:grader|grading|marker|marking|"
          r"examiner|assessor|staff|instructor|teacher|ta|tutor|moderator|reviewer|official|"
          r"internal)(?:'s|s'|s)?\s+(?:notes?|comments?|instructions?|remarks?|memo|"
          r"verdict|decision|override)\b[^\n]{0,80}?\b(?:trusted|verified|official|"
          r"authoritative|added by|written by|from (?:the )?(?:course |teaching |marking )?"
          r"(?:staff|team|instructor|teacher)|staff only|internal|confidential|not (?:shown|"
          r"visible) to (?:the )?students?)|(?<=\()(?:trusted|verified|official|authoritative)"
          r"[,;:]?\s+(?:added|written|inserted|approved|signed)\s+by\s+(?:the\s+)?(?:course\s+|"
          r"teaching\s+|marking\s+)?(?:staff|team|instructors?|teachers?|tas?|tutors?|"
          r"graders?|examiners?)\b"),
    _rule("pre-approved", "claim",
          (*_THIS_WORK, "this grade", "my grade", "this score", "my score", "this mark",
           "my mark", "teacher", "instructor", "professor", "lecturer", "ta", "tutor",
           "department", "school", "examiner", "staff"),
          rf"\b(?:this|my)\s+(?:{_WORK}|grade|score|mark)s?\s+(?:has|have|was|were|is)\s+"
          r"(?:already\s+)?(?:been\s+)?(?:approved|verified|pre-?graded|graded|marked|"
          rf"validated|accepted)\s+(?:by|with)\s+(?:the\s+|my\s+)?{_STAFF}\b|\b{_STAFF}\s+"
          r"(?:has\s+|have\s+)?(?:already\s+)?(?:approved|authori[sz]ed|agreed to|allowed|"
          r"promised|granted|confirmed)\s+(?:me\s+)?(?:full|maximum|a perfect|an a|top)\s+"
          r"(?:marks?|grade|score|points)"),
)


def _ml(name: str, kind: str, anchors: str, pattern: str) -> Rule:
    return _rule(name, kind, words(anchors), pattern, english=False)


_G = r"[\s\S]{0,40}?"  # a short gap in languages written without spaces, or loosely
MULTILINGUAL: tuple[Rule, ...] = (
    # German
    _ml("de-ignore", "override", "ignoriere|ignorieren|ignoriert|ignorier|vergiss|"
        "vergessen sie|missachte|missachten",
        rf"(?:ignorier\w*|vergiss|vergessen sie|missachte\w*){gap(3)}(?:vorherigen|"
        rf"bisherigen|obigen|alle|vorigen|früheren|deine|ihre){gap(2)}(?:anweisungen|"
        r"instruktionen|befehle|regeln|vorgaben)"),
    _ml("de-marks", "score", "gib|geben sie|vergib|vergeben sie|bewerte|bewerten sie|erteile|"
        "erteilen",
        rf"\b(?:gib|geben sie|vergib|vergeben sie|bewerte|bewerten sie|erteile\w*){gap(4)}"
        r"(?:volle punktzahl|volle punkte|die volle punktzahl|höchstpunktzahl|maximale "
        r"punktzahl|bestnote|die bestnote|die note 1|note 1|eine 1|100 ?%|alle punkte)"),
    # French
    _ml("fr-ignore", "override", "ignore|ignorez|ignorer|oublie|oubliez|oublier|ne tiens pas|"
        "ne tenez pas",
        rf"\b(?:ignore|ignorez|ignorer|oublie|oubliez|oublier|ne tiens pas compte des|"
        rf"ne tenez pas compte des){gap(3)}(?:instructions|consignes|directives|règles)"
        r"(?:\s+(?:précédentes|antérieures|ci-dessus|du système))?"),
    _ml("fr-marks", "score", "donne|donnez|attribue|attribuez|accorde|accordez|mets|mettez",
        rf"\b(?:donne|donnez|attribue|attribuez|accorde|accordez|mets|mettez){gap(4)}"
        r"(?:la note maximale|note maximale|tous les points|la totalité des points|20/20|"
        r"100 ?%|la meilleure note|note parfaite)"),
    # Spanish
    _ml("es-ignore", "override", "ignora|ignore|ignorar|ignoren|olvida|olvide|olviden|olvidar",
        rf"\b(?:ignora|ignore|ignorar|ignoren|olvida|olvide|olviden|olvidar){gap(3)}"
        r"(?:instrucciones|indicaciones|reglas|directrices)"),
    _ml("es-marks", "score", "da|dale|dame|otorga|otórgale|asigna|asígnale|pon|ponle|califica|"
        "dé|den",
        rf"\b(?:da|dale|dame|otorga|otórgale|asigna|asígnale|pon|ponle|califica|dé|den)"
        rf"{gap(4)}(?:la máxima (?:nota|puntuación|calificación)|máxima (?:nota|puntuación|"
        r"calificación)|la nota máxima|nota máxima|puntuación máxima|puntuación perfecta|todos "
        r"los puntos|10/10|100 ?%|nota perfecta|calificación perfecta)"),
    # Italian
    _ml("it-ignore", "override", "ignora|ignorate|ignori|dimentica|dimenticate|dimentichi",
        rf"\b(?:ignora|ignorate|ignori|dimentica|dimenticate|dimentichi){gap(3)}(?:istruzioni|"
        r"indicazioni|regole|direttive)"),
    _ml("it-marks", "score", "dai|assegna|assegnate|attribuisci|metti|mettete",
        rf"\b(?:dai|assegna|assegnate|attribuisci|metti|mettete){gap(4)}"
        r"(?:il massimo dei voti|punteggio massimo|il punteggio pieno|voto massimo|pieni voti|"
        r"30 e lode|tutti i punti|100 ?%|10/10(?![/\d]))"),
    # Portuguese
    _ml("pt-ignore", "override", "ignore|ignora|ignorar|esqueça|esqueca|esquece|desconsidere",
        rf"\b(?:ignore|ignora|ignorar|esqueça|esqueca|esquece|desconsidere){gap(3)}"
        r"(?:instruções|instrucoes|orientações|regras|diretrizes)"),
    _ml("pt-marks", "score", "dê|dá|atribua|conceda|coloque",
        rf"(?:dê|dá|atribua|conceda|coloque){gap(4)}(?:nota máxima|a nota máxima|"
        r"pontuação máxima|pontuação total|nota dez|10/10(?![/\d])|100 ?%|todos os pontos)"),
    # Dutch
    _ml("nl-ignore", "override", "negeer|negeren|vergeet",
        rf"\b(?:negeer|negeren|vergeet){gap(3)}(?:instructies|aanwijzingen|regels|opdrachten)"),
    _ml("nl-marks", "score", "geef|ken",
        rf"\b(?:geef|ken){gap(4)}(?:volle punten|het volle punt|maximale score|het maximum|"
        r"een 10|10/10(?![/\d])|alle punten)"),
    # Polish
    _ml("pl-ignore", "override", "zignoruj|zignorujcie|ignoruj|zapomnij",
        rf"\b(?:zignoruj|zignorujcie|ignoruj|zapomnij){gap(3)}(?:instrukcje|instrukcji|"
        r"polecenia|poleceń|zasady|wytyczne)"),
    _ml("pl-marks", "score", "daj|przyznaj|wystaw|postaw",
        rf"\b(?:daj|przyznaj|wystaw|postaw){gap(4)}(?:maksymaln\w+ (?:liczbę punktów|ocenę)|"
        r"maksimum punktów|pełną liczbę punktów|najwyższą ocenę|szóstkę|piątkę|100 ?%)"),
    # Russian and Ukrainian
    _ml("ru-ignore", "override", "игнорируй|проигнорируй|забудь|не обращай|ігноруй|проігноруй",
        rf"(?:игнорируй\w*|проигнорируй\w*|забудь\w*|не обращай\w* внимания на|ігноруй\w*|"
        rf"проігноруй\w*){gap(3)}(?:инструкци\w*|указани\w*|правил\w*|команд\w*|"
        r"інструкці\w*|вказівк\w*)"),
    _ml("ru-marks", "score", "поставь|дай|выстав|присвой|постав",
        rf"(?:поставь\w*|дай\w*|выстав\w*|присвой\w*|постав\w*){gap(4)}(?:максимальн\w* бал\w*|"
        r"высш\w* бал\w*|высш\w* оценк\w*|полн\w* бал\w*|пят[её]рк\w*|отлично|100 ?%|"
        r"найвищ\w* оцінк\w*)"),
    # Chinese
    _ml("zh-ignore", "override", "忽略|无视|忽视|不要理会|忘记|忘掉|無視",
        rf"(?:忽略|无视|忽视|不要理会|忘记|忘掉|無視){_G}(?:指令|指示|说明|說明|规则|規則|提示|要求)"),
    _ml("zh-marks", "score", "给|給|打|评|評|判",
        rf"(?:给|給|打|评|評|判){_G}(?:满分|滿分|最高分|一百分|100分)"),
    # Japanese
    _ml("ja-ignore", "override", "指示|命令|指令|ルール|プロンプト",
        rf"(?:指示|命令|指令|ルール|プロンプト){_G}(?:無視|忘れ)"),
    _ml("ja-marks", "score", "満点|最高点|最高評価",
        rf"(?:満点|最高点|最高評価)(?:を|に){_G}(?:つけ|付け|与え|あげ|して|下さい|ください)"),
    # Korean
    _ml("ko-ignore", "override", "지시|지침|명령|규칙",
        rf"(?:지시|지침|명령|규칙){_G}(?:무시|잊어)"),
    _ml("ko-marks", "score", "만점|최고", rf"(?:만점|최고\s*점수|최고점){_G}(?:주|줘|부여|매겨)"),
    # Arabic
    _ml("ar-ignore", "override", "تجاهل|انس|اهمل|أهمل",
        r"(?:تجاهل\w*|انس\w*|اهمل|أهمل)\s+(?:جميع\s+|كل\s+)?\S*(?:تعليمات|الأوامر|الإرشادات|"
        r"القواعد)"),
    _ml("ar-marks", "score", "أعط|اعط|امنح|ضع",
        r"(?:أعط\w*|اعط\w*|امنح\w*|ضع)[\s\S]{0,40}?(?:الدرجة الكاملة|العلامة الكاملة|"
        r"الدرجة القصوى|أعلى درجة|الدرجة النهائية)"),
    # Turkish
    _ml("tr-ignore", "override", "önceki|yukarıdaki|tüm|bütün",
        r"(?:önceki|yukarıdaki|tüm|bütün)\s+(?:\w+\s+)?(?:talimatları|talimatlari|komutları|"
        r"kuralları)\s+(?:yok say|görmezden gel|unut|dikkate alma)"),
    _ml("tr-marks", "score", "tam puan|en yüksek|maksimum puan|100 puan",
        r"(?:tam puan|en yüksek not|maksimum puan|100 puan)\s*(?:ver|verin)"),
    # Hindi
    _ml("hi-ignore", "override", "निर्देश|आदेश",
        rf"(?:निर्देश|आदेश){_G}(?:अनदेखा|नज़रअंदाज़|नजरअंदाज|भूल)"),
    _ml("hi-marks", "score", "पूरे|पूर्ण|अधिकतम",
        r"(?:पूरे|पूर्ण|अधिकतम)\s+(?:अंक|नंबर)\s+(?:दें|दो|दीजिए)"),
    # Vietnamese, Indonesian/Malay
    _ml("vi-ignore", "override", "bỏ qua|phớt lờ|quên",
        rf"(?:bỏ qua|phớt lờ|quên){_G}(?:hướng dẫn|chỉ dẫn|chỉ thị|lệnh|quy tắc)"),
    _ml("vi-marks", "score", "cho|chấm",
        rf"\b(?:cho|chấm){_G}(?:điểm tối đa|điểm tuyệt đối|điểm 10|10 điểm|điểm cao nhất)"),
    _ml("id-ignore", "override", "abaikan|lupakan|acuhkan",
        rf"(?:abaikan|lupakan|acuhkan){_G}(?:instruksi|petunjuk|perintah|arahan|aturan)"),
    _ml("id-marks", "score", "beri|berikan|kasih",
        rf"\b(?:beri|berikan|kasih){_G}(?:nilai sempurna|nilai penuh|nilai maksimal|"
        r"nilai tertinggi|skor penuh|markah penuh)"),
    # Swedish, Danish, Norwegian
    _ml("nordic-ignore", "override", "ignorera|ignorer|ignorér|glöm|glem",
        rf"\b(?:ignorera|ignorer|ignorér|glöm|glem){gap(3)}(?:instruktioner\w*|instruksjoner\w*|"
        r"instruktionerne|regler\w*)"),
    _ml("nordic-marks", "score", "ge|giv|gi",
        rf"\b(?:ge|giv|gi){gap(4)}(?:full pott|fullt poäng|maxpoäng|högsta betyg|fulde point|"
        r"topkarakter|toppkarakter|højeste karakter|høyeste karakter)"),
    # Greek
    _ml("el-ignore", "override", "αγνόησ|αγνοήστε|ξέχασ|ξεχάστε",
        r"(?:αγνόησε|αγνοήστε|ξέχασε|ξεχάστε)[\s\S]{0,40}?(?:οδηγίες|εντολές|κανόνες)"),
    # Swahili
    _ml("sw-ignore", "override", "puuza|usizingatie|sahau|kupuuza|achana na",
        rf"\b(?:puuza|usizingatie|sahau|kupuuza|achana na){gap(3)}(?:maagizo|maelekezo|"
        r"maelezo|amri|sheria|kanuni)"),
    _ml("sw-marks", "score", "mpe|umpe|mpa|wape|toa|peana|ipe|nipe|weka|mpatie|ipatie",
        rf"\b(?:mpe|umpe|mpa|wape|toa|peana|ipe|nipe|weka|mpatie|ipatie){gap(4)}"
        r"(?:alama kamili|alama zote|maksi kamili|alama za juu|alama ya juu|daraja la juu|"
        r"asilimia mia|100 ?%)"),
    # Czech and Slovak
    _ml("cs-ignore", "override", "ignoruj|ignorujte|ignorovat|zapomeň|zapomeňte|zabudni|"
        "zabudnite|nevšímej|nevšímejte|přehlédni",
        rf"\b(?:ignoruj\w*|ignorovat|zapomeň\w*|zabudni\w*|nevšímej\w* si|přehlédni)"
        rf"{gap(3)}(?:pokyn\w*|instrukc\w*|příkaz\w*|prikaz\w*|pravid\w*|zadání)"),
    _ml("cs-marks", "score", "dej|dejte|dát|přiděl|přidělte|ohodnoť|ohodnoťte|udel|udeľ|"
        "daj|dajte|uděl|udělte",
        rf"\b(?:dej|dejte|dát|přiděl\w*|ohodnoť\w*|udeľ\w*|daj|dajte|uděl\w*){gap(4)}"
        r"(?:plný počet bodů|plný počet bodov|maximální počet bodů|maximálny počet bodov|"
        r"maximum bodů|maximum bodov|plné hodnocení|plné hodnotenie|jedničk\w*|jednotk\w*|"
        r"nejlepší známk\w*|najlepšiu známku|100 ?%|všechny body|všetky body)"),
    # Hebrew
    _ml("he-ignore", "override", "התעלם|התעלמי|התעלמו|תתעלם|שכח|שכחי|שכחו",
        r"(?:התעלם|התעלמי|התעלמו|תתעלם|שכח|שכחי|שכחו)[\s\S]{0,40}?(?:הוראות|הנחיות|כללים|"
        r"ההוראות|ההנחיות)"),
    _ml("he-marks", "score", "תן|תני|תנו|הענק|העניקו|תעניק",
        r"(?:תן|תני|תנו|הענק|העניקו|תעניק)[\s\S]{0,40}?(?:ציון מלא|ציון מקסימלי|ציון 100|"
        r"מאה|את הציון הגבוה|ניקוד מלא)"),
)

# Words around a quoted phrase that make it a *mention* (an essay about prompt injection)
# rather than a use.
DISCUSSION = re.compile(
    r"\b(?:prompt injection|injection attacks?|injections?|jailbreak\w*|attack\w*|adversar\w*|"
    r"exploit\w*|malicious|for example|e\.g\.|for instance|such as|phrases? like|known as|"
    r"so-called|called|red[- ]team\w*|the sentence|the string|the phrase|example|"
    # the same in the corpus's other languages (an essay about attacks, written in French ...)
    r"attaques?|exemple|par exemple|comme|tels? que|injections? de prompt|"
    r"angriff\w*|beispiel|zum beispiel|etwa|ataques?|ejemplo|por ejemplo|como|attacc\w*|"
    r"esempio|per esempio|exemplo|por exemplo|aanval\w*|bijvoorbeeld|atak\w*|przykład\w*|"
    r"útok\w*|příklad\w*|shambulio|mfano)\b")
# A quoted phrase that points at this very submission is a use, even inside a discussion.
SELF_REFERENCE = re.compile(
    r"\b(?:this|my) (?:submission|essay|answer|work|code|assignment|solution|report|paper|"
    r"notebook|student)\b|\b(?:give|award|grant) me\b")
# A model's review reason that reports an attempt to steer the grade.
MODEL_REASON = re.compile(
    r"\b(?:prompt[- ]injection|injection|instruct\w*|manipulat\w*|jailbreak\w*|steer\w*|"
    r"influence the (?:grade|grader|score|grading)|ignore (?:the |all |previous )?"
    r"(?:instructions|rubric)|full marks|hidden (?:text|instructions)|addressed to the "
    r"(?:grader|model|ai)|attempts? to (?:obtain|get|gain|change|alter|raise))\b",
    re.IGNORECASE)

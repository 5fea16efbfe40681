"""Awkward strings for the CLIP tokenizer tests: hand-written cases (unicode, HTML
entities, whitespace oddities, special-token spellings, texts over 77 tokens, the
empty string) and seeded random mixes of them."""

# Strings full of look-alike characters are the point of this module.
# ruff: noqa: RUF001

from __future__ import annotations

import random

HAND_WRITTEN = [
    "a photo of a cat",
    "A Photo Of A CAT",
    "a photo of a dog.",
    "a bad photo of the large red car, taken at night!",
    "What's that? It's a bird; no -- it's a plane...",
    "don't stop, won't stop, I'd've known, you're, we've, they'll, I'm",
    "DON'T IT'S THEY'RE",
    "rock 'n' roll 'tis 'twas ''quoted'' 'single'",
    "don’t it’s “curly double” ‘curly single’",
    "3.14159 1,000,000 -42 1e10 2024-06-01 12:30 #1 50% $9.99 100km/h",
    "٣٤٥ ৩৪ 𝟘𝟙𝟚 ½ ² Ⅻ ⅻ ①",
    "café naïve résumé Ångström façade jalapeño",
    "Straße STRASSE ẞ",
    "日本語のテキスト 猫の写真",
    "中文字符 简体 繁體",
    "한국어 텍스트",
    "مرحبا بالعالم",
    "שלום עולם",
    "Привет, мир! ЁЛКА",
    "Ελληνικά: ΟΔΟΣ σοφός ΣΟΦΟΣ",
    "हिन्दी पाठ",
    "ไทย ภาษา",
    "e\u0301 vs \u00e9",  # NFD and NFC
    "\u0041\u030a \u00c5 \u212b",  # A + ring, Å, Angstrom sign
    "n\u0303o\u0308\u0332",  # stacked combining marks
    "\u0345 a\u0345 !\u0345",  # ypogegrammeni: the regex quirk
    "'\u017f '\u017ft long s",
    "😀 😂 🐱 🐶",
    "👍🏽 👋🏿 family 👨\u200d👩\u200d👧\u200d👦 and 🏳️\u200d🌈",
    "flags 🇫🇷🇩🇪🇯🇵 🇺🇸",
    "❤️ ❤ ☺️ ✔️",
    "&amp; &lt;b&gt;bold&lt;/b&gt; &quot;q&quot; &#39;s &#x263A; &nbsp;x &amp;lt;",
    "fish &amp; chips &copy; 2024",
    "ＦＵＬＬＷＩＤＴＨ　ｔｅｘｔ　１２３",
    "ﬁne ﬂow ligatures",
    "tabs\tand\nnewlines\r\nand   many    spaces",
    "  leading and trailing  ",
    " ",
    "\t\n \r\n",
    "\u3000\u00a0\u2003\u200b",
    "\x1c\x1d\x1e\x1f\x85 odd separators",
    "",
    "<|endoftext|>",
    "<|startoftext|>",
    "a photo <|endoftext|> of a cat",
    "x<|endoftext|>y<|startoftext|>z",
    "<|ENDOFTEXT|> <|EndOfText|>",
    "<end_of_text>",
    "a<end_of_text>b <START_OF_TEXT>",
    "!<end_of_text>",
    "<|endoftext|>" * 90,
    "<end_of_text> " * 90,
    "C++ C# F# .NET node.js e-mail co-op",
    "https://example.com/path?q=1&x=2 user@example.org",
    "@user #hashtag $TICKER :) :-( <3 ^_^",
    '"quoted" (parens) [brackets] {braces} <angles>',
    "...!!!???---___***",
    "the quick brown fox jumps over the lazy dog " * 40,
    "x" * 500,
    "supercalifragilisticexpialidocious" * 15,
    "🐱" * 120,
    "猫" * 200,
    " ".join(str(i) for i in range(300)),
    "Ã©tÃ© mojibake",
    "\x00\x07 control\x7f chars",
    "\ufeffbom",
    "\U0001d400\U0001d401 math bold",
]

# A word list reads better as prose.
WORDS = (  # noqa: SIM905
    "a an the photo picture image of cat dog car tree house person people red blue "
    "green small large beautiful old new running sitting on in at with near street "
    "beach mountain sky night day city sunset portrait close-up drawing painting"
).split()
PUNCT = [*"!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~", "'s", "'t", "'re", "'ll", "...", "--"]
# fmt: off
UNICODE_BITS = [
    "é", "ñ", "ü", "ß", "ø", "Ω", "ς", "Σ", "ſ", "İ", "ı", "ǅ", "e\u0301", "a\u0308",
    "日本", "猫", "한국", "привет", "مرحبا", "שלום", "ελληνικά", "हिन्दी", "ﬁ", "Ａ",
    "’", "“", "”", "…", "—", "·", "€", "£", "¥", "©", "™", "°", "±", "×",
    "😀", "👍🏽", "👨\u200d👩\u200d👧", "🇫🇷", "❤️", "\u200d", "\ufe0f",
    "&amp;", "&lt;b&gt;", "&#39;", "&nbsp;", "&eacute;", "<|endoftext|>", "<end_of_text>",
]
# fmt: on
SPACES = [" ", " ", " ", "", "  ", "\t", "\n", "\r\n", "\u3000", "\u00a0", "\x1c"]


def random_code_point(rng: random.Random) -> str:
    """Any scalar value: both modes must agree with their reference on all of them."""
    while True:
        c = rng.choice([rng.randrange(0x20, 0x3000), rng.randrange(0x3000, 0x110000)])
        if not 0xD800 <= c < 0xE000:
            return chr(c)


def random_piece(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.45:
        piece = rng.choice(WORDS)
    elif kind < 0.6:
        piece = rng.choice(PUNCT)
    elif kind < 0.7:
        piece = str(rng.randrange(0, 10 ** rng.randrange(1, 7)))
    elif kind < 0.9:
        piece = rng.choice(UNICODE_BITS)
    else:
        piece = "".join(random_code_point(rng) for _ in range(rng.randrange(1, 4)))
    return rng.choice([piece, piece, piece.upper(), piece.title()])


def random_text(rng: random.Random) -> str:
    n = rng.choice([1, 2, 3, 5, 8, 13, 21, 40, 120])
    return "".join(random_piece(rng) + rng.choice(SPACES) for _ in range(n))


def corpus() -> list[str]:
    rng = random.Random(20240601)
    return HAND_WRITTEN + [random_text(rng) for _ in range(300)]


TEXTS = corpus()

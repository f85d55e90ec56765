"""The built-in tokenizer: a small byte-level BPE trained on an English corpus written here.

The reference target has no tokenizer of its own (its weights are random), so the
TOK claims run against this one. It is trained once per vocabulary size and cached.

Its vocabulary need not match the model's: the TOK claims only use the tokenizer
(text <-> ids), and TOK-5, the one claim about IDs inside a model, relabels the
model's own vocabulary. A byte-level BPE needs at least 256 byte tokens plus its
special token, so a requested size below ``DEFAULT_VOCAB`` (the tiny presets have
97 entries) gives the default size instead; training also stops early when the
corpus has no pair left that occurs twice.
"""

from __future__ import annotations

import functools
from typing import Any

from reference.tokenizer import ByteBPETokenizer

DEFAULT_VOCAB = 600
SPECIAL_TOKENS = ("<|endoftext|>",)

# A few KB of varied English. Every word TOK-3 and TOK-4 use appears both with and
# without a leading space, and both capitalised and in lower case, so those are real
# merged tokens rather than byte fallbacks.
CORPUS = """\
The cat sat on the mat. The dog sat on the rug. the cat and the dog are friends.
cat, dog, sun, moon, storm: these are words. The sun rises in the east and sets in the west.
The storm is coming. The storm is over. The storm is getting stronger near the coast.
Next week the weather will change; next time we will take the umbrella. Next!
John and Mary went to the bar. John bought a drink for Mary, and Mary thanked him.
A lighthouse stands on the cliff; its light turns all night long to guide the ships.
"Is it raining?" she asked. "No," he said, "but the clouds are dark and the wind is cold."
cat food, cat toys, cat naps: the cat had everything a cat could want.
The Cat in the Hat is a book; THE CAT was written in capitals on the cover.
the The THE the The THE cat Cat CAT next Next NEXT storm Storm STORM sun Sun SUN.
Numbers too: 1, 2, 3, 10, 42, 100, 2024, 3.14159 and 1e-4 appear in text.
Tabs\tand  double  spaces,\nnew lines, and punctuation... (brackets) [lists] {sets} <tags>!
Code looks like this: def embed(ids): return E[ids]  # select rows
The embedding table has one row per token; each row is a vector of width d_model.
Attention compares queries with keys and mixes values; the softmax makes weights that sum to one.
The model predicts the next token: it scores every token in the vocabulary and picks one.
Temperature makes the distribution sharper or flatter; top-k and top-p keep only the likely tokens.
Sunny days, rainy days, windy days: the weather is a favourite topic of conversation.
The moon is bright tonight. the moon is full. A new moon is dark.
She feeds the cat every morning, and he feeds the dog every evening.
Words with accents: café, naïve, résumé, crème brûlée. Greek: λόγος. Emoji: 🙂 🐈 🌧️.
Once upon a time, in a small village by the sea, there lived an old fisherman and his wife.
Every morning he went out in his boat, and every evening he came back with fish for the market.
One day the sea was calm and the sky was clear, but the nets came up empty again and again.
the fisherman did not give up; he waited, and at last something heavy pulled on the line.
Scientists measure the temperature of the ocean at many depths to understand the climate.
The results show that the water is warmer than it was fifty years ago, especially near the surface.
A farmer told the reporters that the crops had failed twice in three years because of the drought.
the journalist wrote the story, the editor changed the title, and the newspaper printed it on Monday.
Students asked simple questions: why is the sky blue? why does the moon change its shape?
The teacher answered patiently, drawing the sun, the earth and the moon on the board.
Learning a language takes time: you read, you listen, you speak, and you make many mistakes.
the best way to remember a new word is to use it in a sentence the same day you learn it.
In the kitchen, the bread was baking and the soup was boiling; the smell filled the whole house.
They walked along the river, talking about books, music, films and the places they wanted to visit.
The train leaves at seven o'clock, so we should get to the station before a quarter to seven.
It's not what you say, it's how you say it. Don't worry; we'll see. I'm sure they're right.
The garden behind the house had roses, tulips and a tall apple tree that gave shade in summer.
In autumn the leaves turned yellow and red, and the children collected them on the way to school.
The museum opened a new exhibition about ancient maps, showing how people imagined the world.
Travellers described mountains, rivers and cities; mapmakers drew them, sometimes in the wrong place.
The computer reads the file, splits the text into tokens, and turns each token into a number.
Those numbers are only addresses: the meaning lives in the vectors stored at each address.
cat cat cat. dog dog dog. the the the. The The The.
cat
next
storm
the end.
The end.
"""


def builtin_tokenizer(vocab_size: int | None = None) -> ByteBPETokenizer:
    """A byte-level BPE asked for max(vocab_size, ``DEFAULT_VOCAB``) ids (fewer if the corpus runs out of merges).

    ``vocab_size`` below ``DEFAULT_VOCAB`` (or None) gives the default size: the
    tokenizer's vocabulary is independent of any model's (see the module docstring).
    Trained once per size; every call with the same size returns the same object.
    """
    return _trained(DEFAULT_VOCAB if vocab_size is None or vocab_size < DEFAULT_VOCAB else vocab_size)


@functools.lru_cache(maxsize=8)
def _trained(size: int) -> ByteBPETokenizer:
    return ByteBPETokenizer.train([CORPUS], size, special_tokens=SPECIAL_TOKENS)


class HFTokenizer:
    """A transformers tokenizer seen through spec.target.Tokenizer (plain text, no BOS/EOS added)."""

    def __init__(self, tok: Any) -> None:
        self.tok = tok

    @property
    def vocab_size(self) -> int:
        return len(self.tok)

    def encode(self, text: str) -> list[int]:
        return list(self.tok.encode(text, add_special_tokens=False))

    def decode(self, ids: list[int]) -> str:
        return str(self.tok.decode(list(ids), clean_up_tokenization_spaces=False))

    def id_to_token(self, i: int) -> str:
        return str(self.tok.convert_ids_to_tokens(int(i)))

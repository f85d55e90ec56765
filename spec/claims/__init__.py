"""The claim modules, one per family of shared/claims.md; importing registers them in spec.catalog."""

from spec.claims import att, blocks, dec, emb, gen, out, pos, ref, soft, tok, tr

__all__ = ["att", "blocks", "dec", "emb", "gen", "out", "pos", "ref", "soft", "tok", "tr"]

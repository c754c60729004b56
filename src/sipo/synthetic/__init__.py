"""The synthetic conflict benchmark (docs/method.md §3): a seeded world of fictional entities, a writer whose long
answers confabulate, the exact oracle judge, and the SFT data that teaches a tiny model the facts and the review /
rewrite skills.

Example::

    pairs = load_pairs(cfg)                       # data.source: synthetic
    prompts = test_prompts(cfg)                   # held-out (entity, phrasing) combinations
    examples = sft_examples(cfg, synthetic_descriptions())
    scores = OracleJudge(cfg).score([p.prompt for p in prompts], responses)
"""

from sipo.synthetic.oracle import OracleJudge, parse_response, score_response
from sipo.synthetic.sft_data import (
    ReviewPlan,
    all_texts,
    apply_review,
    plan_review,
    read_review,
    review_text,
    sft_examples,
    sft_examples_by_kind,
    synthetic_descriptions,
)
from sipo.synthetic.world import (
    ATTRIBUTES,
    OBJECTIVES,
    Entity,
    Fact,
    SyntheticPrompt,
    World,
    build_world,
    fact_question,
    fact_sentence,
    split_sentences,
    test_prompts,
    train_prompts,
)
from sipo.synthetic.writer import conflict_share, load_pairs, pairs_from_rows, rated_rows, writer_answer

__all__ = [
    "ATTRIBUTES",
    "OBJECTIVES",
    "Entity",
    "Fact",
    "OracleJudge",
    "ReviewPlan",
    "SyntheticPrompt",
    "World",
    "all_texts",
    "apply_review",
    "build_world",
    "conflict_share",
    "fact_question",
    "fact_sentence",
    "load_pairs",
    "pairs_from_rows",
    "parse_response",
    "plan_review",
    "rated_rows",
    "read_review",
    "review_text",
    "score_response",
    "sft_examples",
    "sft_examples_by_kind",
    "split_sentences",
    "synthetic_descriptions",
    "test_prompts",
    "train_prompts",
    "writer_answer",
]

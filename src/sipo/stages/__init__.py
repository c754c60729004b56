"""One module per pipeline stage; each exposes ``run(ctx: StageContext) -> dict`` (the stage's counts)."""

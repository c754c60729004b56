"""One module per pipeline stage; each exposes ``run(ctx: StageContext) -> dict`` (the stage's counts) and its
declaration ``SPEC`` (a :class:`~sipo.stage.StageDef`); :mod:`sipo.stages.registry` lists them in pipeline order."""

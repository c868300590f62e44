"""Training workflows: one module per stage, sharing trainer construction, callbacks and outputs.

Entry points: ``tunery.train.workflow.run_train(cfg)`` (``tunery.cli.train`` is the command), the stage
registry ``tunery.train.stages.STAGES``, ``tunery.train.trainer.build_trainer``, ``tunery.train.loop.fit``.
"""

"""Training workflows: one module per stage, sharing trainer construction, callbacks and outputs.

Entry points: ``tunery.train.workflow.run_train(cfg)`` (and ``main`` for the CLI),
``tunery.train.trainer.build_trainer``, ``tunery.train.loop.fit``.
"""

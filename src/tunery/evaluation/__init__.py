"""Few-shot multiple-choice evaluation (MMLU / C-Eval / CMMLU format) and the lm-eval bridge.

``tasks`` finds and reads task folders, ``prompts`` builds the exact prompt text, ``scorer`` reads the
model's next-token probabilities of the choice letters, ``results`` aggregates and writes the files,
``workflow`` ties them together for ``tunery eval``. See docs/eval.md.
"""

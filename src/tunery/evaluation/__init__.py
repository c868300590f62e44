"""Few-shot multiple-choice evaluation (MMLU / C-Eval / CMMLU format) and the lm-eval bridge.

``tasks`` finds and reads task folders (``hub_tasks`` fetches the public benchmarks), ``prompts``
builds the exact prompt text, ``encoding`` turns it into token ids (plain or through a chat template),
``scorer`` reads the next-token probabilities of the choice letters, ``results`` aggregates and
writes the files, ``harness`` runs lm-eval tasks, and ``workflow`` ties them together for
``tunery eval``. See docs/eval.md.
"""

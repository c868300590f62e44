"""Copy the table `tunery demo` wrote (demo_table.md) into README.md between the demo-table markers.

usage: python scripts/update_readme_demo.py [DEMO_OUTPUT_DIR] [README]
(defaults: saves/smollm2-135m/lora/demo and README.md; `make demo-readme` runs the demo, then this)
"""

from __future__ import annotations

import sys
from pathlib import Path

from tunery.demo import DEMO_CONFIG, TABLE_FILE, readme_with_table


def main(argv: list[str]) -> int:
    output_dir = Path(argv[0] if argv else DEMO_CONFIG["output_dir"])
    readme = Path(argv[1] if len(argv) > 1 else "README.md")
    table_file = output_dir / TABLE_FILE
    if not table_file.is_file():
        print(f"update_readme_demo: {table_file} does not exist; run `tunery demo` first", file=sys.stderr)
        return 2
    try:
        text = readme_with_table(readme.read_text(encoding="utf-8"), table_file.read_text(encoding="utf-8"))
    except ValueError as exc:
        print(f"update_readme_demo: {readme}: {exc}", file=sys.stderr)
        return 2
    readme.write_text(text, encoding="utf-8")
    print(f"updated the demo table in {readme} from {table_file}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

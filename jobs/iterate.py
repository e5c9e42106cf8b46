"""Entry script for `ray job submit`: one iteration stage (--stage mine|search|pairs|train); same code as `itool iterate`.

ray job submit --working-dir . -- python jobs/iterate.py --config quickstart [--section.key value ...]
"""

if __name__ == "__main__":
    from _entry import run

    run("iterate")

"""Entry script for `ray job submit`: the OpenAI-compatible endpoint; same code as `itool serve`.

ray job submit --working-dir . -- python jobs/serve.py --config quickstart [--section.key value ...]
"""

if __name__ == "__main__":
    from _entry import run

    run("serve")

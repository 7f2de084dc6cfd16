"""TinyTorch's milestone system: course definition (milestones.json), progress engine, `tito` CLI.

Modules: engine (module/milestone state, cache, unlocks), render (text output), progress
(`write_progress(out_dir)` -> progress.md + timeline.svg, used by site.py and `--write-docs`),
tito (the CLI), testrun (`make test`), site (the docs builder, owned by the docs helper).
"""

rule plan:
    output:
        f"{R}/plan.tsv",
    log:
        f"{R}/logs/plan.log",
    localrule: True
    params:
        rows=grid.plan_rows(STUDY),
    run:
        grid.write_plan(params.rows, output[0])


rule study:
    output:
        study=f"{R}/study.json",
        settings=f"{R}/postprocess_settings.json",
        default=f"{R}/postprocess_default.json",
    log:
        f"{R}/logs/study.log",
    localrule: True
    params:
        study=STUDY,
        warnings=WARNINGS,
        settings=grid.postprocess_settings(STUDY),
    run:
        grid.write_study(params.study, params.warnings, params.settings, output)

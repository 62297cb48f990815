rule plan:
    output:
        f"{R}/plan.tsv",
    log:
        f"{R}/logs/plan.log",
    localrule: True
    params:
        rows=summary.plan_rows(STUDY),
    run:
        summary.write_plan(params.rows, output[0])


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
        settings=runs.postprocess_settings(STUDY),
    run:
        runs.write_study(params.study, params.warnings, params.settings, output)

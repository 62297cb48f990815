if BACKEND == "demo":

    rule demo_data:
        output:
            annotations=f"{R}/data/annotations.json",
            classes=f"{R}/data/category_idx.txt",
            features=directory(f"{R}/data/features"),
        log:
            f"{R}/logs/demo_data.log",
        benchmark:
            f"{R}/benchmarks/demo_data.tsv"
        localrule: True  # CPU work: only the GPU rules go to SLURM
        conda:
            CONDA_ENV
        params:
            seed=STUDY["demo"]["data_seed"],
            train=STUDY["demo"]["videos_train"],
            val=STUDY["demo"]["videos_val"],
            classes=STUDY["demo"]["classes"],
            out=lambda wc, output: os.path.dirname(output.annotations),
        shell:
            "python -m tadsweep.backends.demo data --out {params.out:q} --seed {params.seed}"
            " --videos-train {params.train} --videos-val {params.val} --classes {params.classes}"
            " > {log:q} 2>&1"

    rule demo_pretrain:
        input:
            rules.demo_data.output,
        output:
            f"{R}/data/backbone.pt",
        log:
            f"{R}/logs/demo_pretrain.log",
        benchmark:
            f"{R}/benchmarks/demo_pretrain.tsv"
        localrule: True
        conda:
            CONDA_ENV
        params:
            seed=STUDY["demo"]["data_seed"],
            data=lambda wc, input: os.path.dirname(input[0]),
        shell:
            "python -m tadsweep.backends.demo pretrain --data {params.data:q} --out {output:q}"
            " --seed {params.seed} > {log:q} 2>&1"

else:

    rule check_paths:
        output:
            paths=f"{R}/site/paths.json",
            annotations=f"{R}/site/annotations.json",
        log:
            f"{R}/logs/check_paths.log",
        localrule: True
        params:
            paths=STUDY["paths"],
        run:
            paths.check_site_paths(STUDY, output.paths, output.annotations)

ALL_TARGETS.extend(
    f"results/videos/{person}/{video}.{ext}"
    for person in sorted(PEOPLE)
    for video in person_videos(person)
    for ext in ("mp4", "json")
)


rule ingest_video:
    """Download a URL through yt-dlp (only the start/end section) or take a local file; probe it."""
    input:
        local_video_input,
    output:
        video="results/videos/{person}/{video}.mp4",
        meta="results/videos/{person}/{video}.json",
    log:
        "results/logs/ingest_video/{person}/{video}.log",
    benchmark:
        "results/benchmarks/ingest_video/{person}/{video}.tsv"
    conda:
        "../envs/ingest.yaml"
    params:
        # The whole entry is a param: editing one video's URL or times re-runs only its job.
        entry=lambda wc: video_entry(config, wc.person, wc.video),
        download=config["download"],
    script:
        "../workflow/scripts/ingest_video.py"

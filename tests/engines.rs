//! The job engines of deploy/: a real one-node Slurm cluster runs the array script and
//! the dependent merge (CI starts it with tests/engines/slurm.sh and sets SLURM_CONF);
//! the Kubernetes manifests and the Ray driver are checked as far as works offline: the
//! manifests' commands run as their pods would, the driver runs on a stand-in `ray`.
//! Each merged result must equal the one-process run byte for byte.

mod common;

use std::path::{Path, PathBuf};

use common::*;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// The one-process results.json and index.html of `spec`.
fn one_process(spec: &Path, out: &Path) -> (Vec<u8>, Vec<u8>) {
    let o = strata()
        .args(["report", s(spec), "--quiet", "--out", s(out)])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    outputs(out)
}

fn outputs(dir: &Path) -> (Vec<u8>, Vec<u8>) {
    (
        std::fs::read(dir.join("results.json")).unwrap(),
        std::fs::read(dir.join("index.html")).unwrap(),
    )
}

fn slurm_available() -> bool {
    std::env::var_os("SLURM_CONF").is_some()
        && std::process::Command::new("sinfo")
            .arg("-h")
            .output()
            .is_ok_and(|o| o.status.success())
}

/// The launcher: a job array of 4 shards and a merge that waits for it. One shard fails
/// the first time: the merge is cancelled, launch.sh says so, merge names the shard, and
/// `--only` re-runs it.
#[test]
fn slurm_array_and_dependent_merge() {
    if !slurm_available() {
        assert!(
            std::env::var_os("STRATA_REQUIRE_SLURM").is_none(),
            "STRATA_REQUIRE_SLURM is set but no Slurm cluster answers (SLURM_CONF, sinfo)"
        );
        eprintln!("skipped: no Slurm cluster (tests/engines/slurm.sh start DIR, then SLURM_CONF)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let spec = shard_spec(tmp.path(), "");
    let want = one_process(&spec, &tmp.path().join("whole"));
    // A strata that fails as shard 2, the first time only.
    let flaky = tmp.path().join("flaky-strata");
    std::fs::write(
        &flaky,
        format!(
            "#!/bin/sh\nif [ \"$SLURM_ARRAY_TASK_ID\" = 2 ] && [ ! -e {marker} ]; then touch {marker}; echo 'shard 2 fails once' >&2; exit 1; fi\nexec {bin} \"$@\"\n",
            marker = s(&tmp.path().join("failed-once")),
            bin = env!("CARGO_BIN_EXE_strata"),
        ),
    )
    .unwrap();
    std::process::Command::new("chmod")
        .args(["+x", s(&flaky)])
        .status()
        .unwrap();
    let out = tmp.path().join("out");
    let launch = |extra: &[&str]| {
        std::process::Command::new(repo("deploy/slurm/launch.sh"))
            .current_dir(tmp.path())
            .env("STRATA", &flaky)
            .args([s(&spec), "4", "--out", s(&out), "--wait"])
            .args(extra)
            .output()
            .unwrap()
    };
    let first = launch(&[]);
    let err = String::from_utf8_lossy(&first.stderr);
    assert!(
        !first.status.success(),
        "a failed shard must fail the launch"
    );
    assert!(err.contains("wrote no results"), "{err}");
    assert!(!out.join("results.json").exists());
    let merge = strata()
        .args(["merge", s(&out.join("partials")), "--out", s(&out)])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&merge.stderr);
    assert_eq!(merge.status.code(), Some(2));
    assert!(err.contains("1 of 4 shards are missing: 2"), "{err}");
    let again = launch(&["--only", "2"]);
    assert!(
        again.status.success(),
        "{}{}",
        String::from_utf8_lossy(&again.stdout),
        String::from_utf8_lossy(&again.stderr)
    );
    assert!(
        outputs(&out) == want,
        "Slurm's merged result differs from one process"
    );
}

/// Reads a manifest's container command, with `strata` and `/data` mapped to this machine.
fn pod_command(manifest: &serde_json::Value, bin: &str, data: &Path) -> Vec<String> {
    let c = &manifest["spec"]["template"]["spec"]["containers"][0];
    c["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let a = a.as_str().unwrap();
            if a == "strata" {
                bin.to_string()
            } else {
                a.replace("/data", s(data))
            }
        })
        .collect()
}

fn manifest(name: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(repo(&format!("deploy/kubernetes/{name}"))).unwrap();
    serde_saphyr::from_str(&text).unwrap()
}

/// The Indexed Job as Kubernetes would run it: pod i with JOB_COMPLETION_INDEX=i and the
/// manifest's env, then the merge Job's command.
#[test]
fn kubernetes_indexed_job_as_its_pods_run_it() {
    let shards = manifest("shards.yaml");
    let merge = manifest("merge.yaml");
    assert_eq!(shards["kind"], "Job");
    assert_eq!(shards["spec"]["completionMode"], "Indexed");
    let n = shards["spec"]["completions"].as_u64().unwrap();
    let env = &shards["spec"]["template"]["spec"]["containers"][0]["env"];
    let count = env
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "STRATA_SHARD_COUNT")
        .expect("the pods get STRATA_SHARD_COUNT")["value"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        count,
        n.to_string(),
        "STRATA_SHARD_COUNT equals completions"
    );

    // The volume: the spec where the manifest names it.
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path();
    std::fs::create_dir_all(data.join("experiments")).unwrap();
    shard_spec(&data.join("experiments"), "");
    std::fs::rename(
        data.join("experiments/shards.yaml"),
        data.join("experiments/correlation.yaml"),
    )
    .unwrap();
    let spec = data.join("experiments/correlation.yaml");
    let text = std::fs::read_to_string(&spec)
        .unwrap()
        .replace("name: shards", "name: correlation");
    std::fs::write(&spec, text).unwrap();
    let want = one_process(&spec, &tmp.path().join("whole"));

    let bin = env!("CARGO_BIN_EXE_strata");
    for i in (0..n).rev() {
        let cmd = pod_command(&shards, bin, data);
        let o = std::process::Command::new(&cmd[0])
            .args(&cmd[1..])
            .env("JOB_COMPLETION_INDEX", i.to_string())
            .env("STRATA_SHARD_COUNT", &count)
            .env("HF_HUB_OFFLINE", "1")
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "pod {i}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let cmd = pod_command(&merge, bin, data);
    let o = std::process::Command::new(&cmd[0])
        .args(&cmd[1..])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        outputs(&data.join("reports/correlation")) == want,
        "the Indexed Job's merged result differs from one process"
    );
}

/// The Ray driver, its tasks run in-process by a stand-in `ray` module.
#[test]
fn ray_driver_fans_out_and_merges() {
    let python = ["python3", "python"]
        .into_iter()
        .find(|p| std::process::Command::new(p).arg("-V").output().is_ok());
    let Some(python) = python else {
        eprintln!("skipped: no Python");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let spec = shard_spec(tmp.path(), "");
    let want = one_process(&spec, &tmp.path().join("whole"));
    let out = tmp.path().join("ray-out");
    let o = std::process::Command::new(python)
        .env("PYTHONPATH", repo("tests/engines/ray_stub"))
        .env("HF_HUB_OFFLINE", "1")
        .args([
            s(&repo("deploy/ray/strata_ray.py")),
            s(&spec),
            "--shards",
            "5",
            "--out",
            s(&out),
            "--strata",
            env!("CARGO_BIN_EXE_strata"),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read_dir(out.join("partials")).unwrap().count(), 5);
    assert!(
        outputs(&out) == want,
        "the Ray driver's merged result differs from one process"
    );
}

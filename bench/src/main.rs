//! `portguard-bench <datapath|throughput|scale|reload|all>`: the benchmarks behind
//! `cargo xtask bench` (issue #9), run as root in release mode: what portguard costs per packet
//! against a program that does nothing, how that cost grows with the policy, how many packets
//! per second a veth receiver handles with portguard, with the `XDP_DROP` limit and with
//! nftables, and what a reload costs. Each benchmark writes `bench/results/<name>.md` and
//! `<name>.json`; `all` also draws the cost-against-policy-size plot.
//!
//! The harness (pin directories, namespaces, veth pairs, frame builders, the daemon runner) is
//! the integration tests' library, so a benchmark sets up exactly what the tests check.

mod datapath;
mod plot;
mod probe;
mod reload;
mod report;
mod scale;
mod sys;
mod throughput;

use std::{path::PathBuf, process::ExitCode, time::Instant};

use report::Machine;

const USAGE: &str = "usage: portguard-bench <datapath|throughput|scale|reload|all>\n       \
                     portguard-bench profile CASE [SECONDS]  (one datapath case, for perf record)";

/// The workspace root: results and policies are found from here whatever the working
/// directory `cargo run` was started in.
fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [profile, key, rest @ ..] = args.as_slice()
        && profile == "profile"
    {
        let secs = rest.first().and_then(|s| s.parse().ok()).unwrap_or(10);
        datapath::profile(&workspace_root(), key, secs);
        return ExitCode::SUCCESS;
    }
    let [which] = args.as_slice() else {
        eprintln!("{USAGE}");
        return ExitCode::FAILURE;
    };
    if !["datapath", "throughput", "scale", "reload", "all"].contains(&which.as_str()) {
        eprintln!("unknown benchmark `{which}`\n{USAGE}");
        return ExitCode::FAILURE;
    }
    let root = workspace_root();
    let out = root.join("bench/results");
    let machine = Machine::detect(&format!("cargo xtask bench {which}"), &root);
    let all = which == "all";
    let started = Instant::now();
    let step = |name: &str| {
        eprintln!(
            "portguard-bench: {name} ({:.0}s elapsed)",
            started.elapsed().as_secs_f64()
        );
    };
    let write = |r: &report::Report| {
        r.write(&out, &machine)
            .unwrap_or_else(|e| panic!("writing {}: {e}", out.display()));
        println!(
            "{}",
            std::fs::read_to_string(out.join(format!("{}.md", r.name))).unwrap_or_default()
        );
    };
    if all || which == "datapath" {
        step("datapath");
        write(&datapath::run(&root));
    }
    if all || which == "scale" {
        step("scale");
        let (report, points) = scale::run(&root);
        write(&report);
        if all {
            let path = out.join("ns-per-packet-vs-policy-size.svg");
            std::fs::write(&path, plot::svg(&points, &machine.caption()))
                .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
            println!("plot: {}", path.display());
        }
    }
    if all || which == "throughput" {
        step("throughput");
        write(&throughput::run(&root));
    }
    if all || which == "reload" {
        step("reload");
        write(&reload::run());
    }
    step("done");
    ExitCode::SUCCESS
}

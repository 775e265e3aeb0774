//! The HTTP comparison as Markdown, from [`HttpResults`] alone.

use std::fmt::Write as _;

use crate::markdown::{render_goals, render_header, render_summaries};

use super::{HttpPoint, HttpResults, SubjectGoals};

/// The whole report: environment, tools, the table, the goals, the nginx
/// configuration.
pub fn render(results: &HttpResults) -> String {
    let mut out = render_header(&results.environment, &results.settings);
    let _ = writeln!(
        out,
        "nginx: {}; wrk: {}; `wrk -t1 --latency`, keep-alive; pipelined: `{}`, \
         {} requests per write.\n",
        results.nginx_version,
        results.wrk_version,
        results.pipeline_script,
        super::PIPELINE_DEPTH,
    );
    out.push_str(&render_tables(results));
    if let Some(config) = &results.nginx_config {
        // Paths relative to the workspace, as the commands above are.
        let root = format!("{}/", crate::prepare::workspace_root().display());
        let config = config.replace(&root, "");
        let _ = writeln!(
            out,
            "\n<details><summary>nginx's configuration (first run)</summary>\n\n```nginx\n{}```\n\n</details>",
            config
        );
    }
    out
}

/// The table of medians with ratios to nginx, then each evloop driver's
/// goals.
pub fn render_tables(results: &HttpResults) -> String {
    tables_and_goals(
        &results.throughput,
        results.baseline,
        &results.goals,
        "the HTTP service",
    )
}

/// The table of medians with ratios to `baseline`, then each subject's
/// goals under "Goals of WHAT (server)": `compare http`'s and `compare
/// https`'s.
pub fn tables_and_goals(
    throughput: &[HttpPoint],
    baseline: &str,
    goals: &[SubjectGoals],
    what: &str,
) -> String {
    let rows = throughput.iter().flat_map(|point| {
        let load = point.load.label();
        point.servers.iter().map(move |s| (load.clone(), s))
    });
    let mut out = render_summaries(rows, baseline, None);
    for subject in goals {
        out.push('\n');
        out.push_str(&render_goals(
            &format!("Goals of {what} ({})", subject.server),
            &subject.goals,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::time::Duration;

    use crate::compare::{RunSettings, ServerSummary};
    use crate::environment::Environment;
    use crate::goals::Goal;
    use crate::http::{HttpPoint, LOADS, SubjectGoals};

    fn results() -> HttpResults {
        HttpResults {
            environment: Environment::for_tests(),
            settings: RunSettings {
                rounds: 1,
                warmup: Duration::from_secs(1),
                duration: Duration::from_secs(2),
                quick: true,
            },
            baseline: "nginx",
            nginx_version: "nginx version: nginx/1.22.1".into(),
            wrk_version: "wrk 4.1.0".into(),
            nginx_config: Some("daemon off;\n".into()),
            pipeline_script: "bench/scripts/pipeline.lua".into(),
            throughput: vec![HttpPoint {
                load: LOADS[3],
                servers: vec![
                    ServerSummary {
                        requests_per_sec: Some(20_000.0),
                        ..ServerSummary::new("nginx")
                    },
                    ServerSummary {
                        errors: vec!["round 0: failed to start: unknown service 'http'".into()],
                        ..ServerSummary::new("evloop")
                    },
                ],
            }],
            goals: vec![SubjectGoals {
                server: "evloop",
                goals: vec![Goal {
                    figure: "requests/s vs nginx, 13 B × 50 conns, pipelined 16".into(),
                    measured: None,
                    target: "≥ 1.50×".into(),
                    met: None,
                }],
            }],
        }
    }

    #[test]
    fn rows_ratios_failures_and_goals_are_all_shown() {
        let out = render(&results());
        assert!(
            out.contains("nginx: nginx version: nginx/1.22.1; wrk: wrk 4.1.0"),
            "{out}"
        );
        assert!(
            out.contains("| requests/s vs nginx | CPU per request vs nginx |\n"),
            "only nginx's ratios: {out}"
        );
        assert!(
            out.contains("| 13 B × 50 conns, pipelined 16 | nginx | 20,000 |"),
            "{out}"
        );
        assert!(
            out.contains(
                "- 13 B × 50 conns, pipelined 16, evloop: round 0: failed to start: unknown service 'http'"
            ),
            "{out}"
        );
        assert!(
            out.contains("### Goals of the HTTP service (evloop)"),
            "{out}"
        );
        assert!(
            out.contains("| requests/s vs nginx, 13 B × 50 conns, pipelined 16 | — | ≥ 1.50× | not measured |"),
            "{out}"
        );
        assert!(out.contains("```nginx\ndaemon off;\n```"), "{out}");
    }
}

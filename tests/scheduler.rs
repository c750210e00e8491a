//! The DAG scheduler with real threads: dependency order, critical-path priority, fail-fast and
//! keep-going, cancellation, graph validation, and the policy simulation. Assertions are about
//! orderings and statuses, never about durations, so a loaded machine cannot make them flaky.

#![allow(clippy::disallowed_methods)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::Duration;

use fissile_oci::compile::scheduler::{
    least_deps_first_order, run, schedule, simulate, CancelToken, Event, Graph, GraphError, Node,
    Policy, RunOptions, Status, StopReason,
};

/// splitmix64: a fixed-seed generator for reproducible random graphs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// `len` nodes; each depends on up to 3 random earlier nodes, then indexes are shuffled so that
/// dependencies do not always come first.
fn random_dag(len: usize, seed: u64) -> Vec<Node> {
    let mut rng = Rng(seed);
    let mut perm: Vec<usize> = (0..len).collect();
    for i in (1..len).rev() {
        perm.swap(i, rng.below(i + 1));
    }
    let mut nodes = vec![Node::new(vec![], 1.0); len];
    for i in 0..len {
        let deps = if i == 0 { 0 } else { rng.below(4) };
        let dependencies = (0..deps).map(|_| perm[rng.below(i)]).collect();
        let weight = 1.0 + rng.below(20) as f64;
        nodes[perm[i]] = Node::new(dependencies, weight);
    }
    nodes
}

fn deps(list: &[&[usize]]) -> Vec<Node> {
    list.iter().map(|d| Node::new(d.to_vec(), 1.0)).collect()
}

#[test]
fn dependencies_finish_before_dependants_start() {
    let graph = Graph::new(&random_dag(60, 7)).unwrap();
    // A global sequence of job starts and ends, written by the jobs themselves.
    let log = Mutex::new(Vec::new());
    let active = AtomicUsize::new(0);
    let most_active = AtomicUsize::new(0);
    let mut events = Vec::new();
    let report = run(
        &graph,
        &RunOptions::new(3),
        |node, _token| {
            log.lock().unwrap().push(("start", node));
            let now = active.fetch_add(1, Ordering::SeqCst) + 1;
            most_active.fetch_max(now, Ordering::SeqCst);
            thread::sleep(Duration::from_millis(1 + (node % 4) as u64));
            active.fetch_sub(1, Ordering::SeqCst);
            log.lock().unwrap().push(("end", node));
            Ok::<_, String>(node)
        },
        |event| match event {
            Event::Started(n) => events.push(("started", n)),
            Event::Finished(n, _) => events.push(("finished", n)),
            Event::Stopping(_) => panic!("nothing fails"),
        },
    );
    assert!(report.all_succeeded());
    assert!(most_active.load(Ordering::SeqCst) <= 3);
    let log = log.into_inner().unwrap();
    let at = |kind: &str, node: usize| log.iter().position(|&e| e == (kind, node)).unwrap();
    let event_at =
        |kind: &str, node: usize| events.iter().position(|&e| e == (kind, node)).unwrap();
    for node in 0..graph.len() {
        assert_eq!(report.statuses[node], Status::Succeeded(node));
        let span = report.spans[node].unwrap();
        assert!(event_at("started", node) < event_at("finished", node));
        for &dep in graph.dependencies(node) {
            assert!(
                at("end", dep) < at("start", node),
                "{dep} ended after {node} started"
            );
            assert!(event_at("finished", dep) < event_at("started", node));
            assert!(report.spans[dep].unwrap().end <= span.start);
        }
    }
    assert_eq!(events.len(), 2 * graph.len());
}

#[test]
fn one_worker_follows_critical_path_priority() {
    // Remaining critical paths: 0 -> 6 (1 + 3 + 2), 1 -> 6 (5 + 1), 2 -> 3, 3 -> 5, 4 -> 1, 5 -> 2.
    let nodes = vec![
        Node::new(vec![], 1.0),
        Node::new(vec![], 5.0),
        Node::new(vec![0], 1.0),
        Node::new(vec![0], 3.0),
        Node::new(vec![1], 1.0),
        Node::new(vec![3, 2], 2.0),
    ];
    let graph = Graph::new(&nodes).unwrap();
    assert_eq!(graph.remaining_path(0), 6.0);
    assert_eq!(graph.remaining_path(1), 6.0);
    assert_eq!(graph.critical_path(), 6.0);
    let order = Mutex::new(Vec::new());
    let report = run(
        &graph,
        &RunOptions::new(1),
        |node, _| {
            order.lock().unwrap().push(node);
            Ok::<_, String>(())
        },
        |_| {},
    );
    assert!(report.all_succeeded());
    // 0 and 1 tie (index breaks it); then 1 (6) before 3 (5) before 2 (3); then 5 (2) before 4.
    let expected = vec![0, 1, 3, 2, 5, 4];
    assert_eq!(order.into_inner().unwrap(), expected);
    assert_eq!(
        schedule(&graph, 1, Policy::CriticalPath).start_order(),
        expected
    );
}

#[test]
fn fail_fast_reports_every_failure_and_cancels_the_rest() {
    // 0 and 1 fail together; 2 runs long and polls; 3 and 4 sit behind the failures; 5 is
    // independent but has the lowest priority, so with 3 workers it never gets a slot.
    let nodes = vec![
        Node::new(vec![], 1.0),
        Node::new(vec![], 1.0),
        Node::new(vec![], 10.0),
        Node::new(vec![0], 1.0),
        Node::new(vec![1], 1.0),
        Node::new(vec![], 0.1),
    ];
    let graph = Graph::new(&nodes).unwrap();
    let both_failing = Barrier::new(2);
    let callback_ran = Arc::new(AtomicBool::new(false));
    let mut started = Vec::new();
    let mut stops = Vec::new();
    let report = run(
        &graph,
        &RunOptions::new(3),
        |node, token| match node {
            0 | 1 => {
                both_failing.wait();
                Err(format!("node {node} broke"))
            }
            2 => {
                let flag = callback_ran.clone();
                token.on_cancel(move || flag.store(true, Ordering::SeqCst));
                for _ in 0..2000 {
                    if token.is_cancelled() {
                        return Err("stopped".to_string());
                    }
                    thread::sleep(Duration::from_millis(5));
                }
                Ok(())
            }
            _ => Ok(()),
        },
        |event| match event {
            Event::Started(n) => started.push(n),
            Event::Stopping(reason) => stops.push(reason),
            Event::Finished(..) => {}
        },
    );
    assert_eq!(report.statuses[0], Status::Failed("node 0 broke".into()));
    assert_eq!(report.statuses[1], Status::Failed("node 1 broke".into()));
    assert_eq!(
        report.statuses[2],
        Status::Cancelled {
            error: "stopped".into()
        }
    );
    assert_eq!(report.statuses[3], Status::Skipped { because: 0 });
    assert_eq!(report.statuses[4], Status::Skipped { because: 1 });
    assert_eq!(report.statuses[5], Status::NotStarted);
    assert!(callback_ran.load(Ordering::SeqCst));
    started.sort();
    assert_eq!(started, vec![0, 1, 2]);
    assert_eq!(stops.len(), 1);
    assert!(matches!(stops[0], StopReason::Failure(0 | 1)));
    assert_eq!(report.stopped, Some(stops[0]));
    assert!(!report.interrupted);
    let failed: Vec<usize> = report.failures().iter().map(|f| f.0).collect();
    assert_eq!(failed, vec![0, 1]);
    assert!(report.spans[5].is_none());
}

#[test]
fn keep_going_runs_everything_not_behind_a_failure() {
    let nodes = deps(&[
        &[],     // 0 fails
        &[],     // 1
        &[0],    // 2 skipped (0)
        &[2],    // 3 skipped (0)
        &[1],    // 4
        &[0, 1], // 5 skipped (0)
        &[4],    // 6
        &[],     // 7 fails
        &[7, 4], // 8 skipped (7)
        &[6],    // 9
    ]);
    let graph = Graph::new(&nodes).unwrap();
    let runs: Vec<AtomicUsize> = (0..nodes.len()).map(|_| AtomicUsize::new(0)).collect();
    let mut finished = Vec::new();
    let report = run(
        &graph,
        &RunOptions::new(2).keep_going(true),
        |node, _| {
            runs[node].fetch_add(1, Ordering::SeqCst);
            thread::sleep(Duration::from_millis(2));
            if node == 0 || node == 7 {
                Err(format!("{node} failed"))
            } else {
                Ok(node * 10)
            }
        },
        |event| {
            if let Event::Finished(n, status) = event {
                finished.push((n, status.label()));
            }
        },
    );
    for node in [1, 4, 6, 9] {
        assert_eq!(report.statuses[node], Status::Succeeded(node * 10));
    }
    assert_eq!(report.statuses[0], Status::Failed("0 failed".into()));
    assert_eq!(report.statuses[7], Status::Failed("7 failed".into()));
    for (node, because) in [(2, 0), (3, 0), (5, 0), (8, 7)] {
        assert_eq!(report.statuses[node], Status::Skipped { because });
        assert_eq!(runs[node].load(Ordering::SeqCst), 0);
    }
    for node in [0, 1, 4, 6, 7, 9] {
        assert_eq!(runs[node].load(Ordering::SeqCst), 1);
    }
    assert_eq!(report.stopped, None);
    // One Finished event per node, skipped ones included.
    finished.sort();
    let nodes_finished: Vec<usize> = finished.iter().map(|f| f.0).collect();
    assert_eq!(nodes_finished, (0..10).collect::<Vec<_>>());
}

#[test]
fn external_cancel_stops_the_run() {
    // 0 and 1 run until cancelled; 2 and 3 wait for them; 4 is independent but last in line.
    let nodes = vec![
        Node::new(vec![], 5.0),
        Node::new(vec![], 5.0),
        Node::new(vec![0], 1.0),
        Node::new(vec![1, 0], 1.0),
        Node::new(vec![], 1.0),
    ];
    let graph = Graph::new(&nodes).unwrap();
    let interrupt = CancelToken::new();
    let both_running = Arc::new(Barrier::new(3));
    let canceller = {
        let (interrupt, both_running) = (interrupt.clone(), both_running.clone());
        thread::spawn(move || {
            both_running.wait();
            interrupt.cancel();
        })
    };
    let mut stops = Vec::new();
    let report = run(
        &graph,
        &RunOptions::new(2).cancel_token(interrupt.clone()),
        |node, token| {
            if node <= 1 {
                both_running.wait();
                if token.wait_timeout(Duration::from_secs(20)) {
                    return Err("interrupted".to_string());
                }
            }
            Ok(())
        },
        |event| {
            if let Event::Stopping(reason) = event {
                stops.push(reason);
            }
        },
    );
    canceller.join().unwrap();
    assert!(report.interrupted);
    assert_eq!(stops, vec![StopReason::Interrupted]);
    for node in [0, 1] {
        let error = "interrupted".to_string();
        assert_eq!(report.statuses[node], Status::Cancelled { error });
    }
    for node in [2, 3, 4] {
        assert_eq!(report.statuses[node], Status::NotStarted);
    }
    assert!(!report.all_succeeded());
}

#[test]
fn an_already_cancelled_token_starts_nothing() {
    let graph = Graph::new(&deps(&[&[], &[0], &[]])).unwrap();
    let interrupt = CancelToken::new();
    interrupt.cancel();
    let calls = AtomicUsize::new(0);
    let report = run(
        &graph,
        &RunOptions::new(2).cancel_token(interrupt),
        |_, _| -> Result<(), String> {
            calls.fetch_add(1, Ordering::SeqCst);
            Ok(())
        },
        |_| {},
    );
    assert!(report.interrupted);
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert!(report.statuses.iter().all(|s| *s == Status::NotStarted));
}

#[test]
fn a_panicking_job_is_a_failure_of_its_node() {
    let graph = Graph::new(&deps(&[&[], &[0]])).unwrap();
    let report = run(
        &graph,
        &RunOptions::new(2),
        |node, _| -> Result<(), String> {
            if node == 0 {
                panic!("boom");
            }
            Ok(())
        },
        |_| {},
    );
    match &report.statuses[0] {
        Status::Failed(error) => assert!(error.contains("boom"), "{error}"),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(report.statuses[1], Status::Skipped { because: 0 });
}

#[test]
fn bad_graphs_are_errors() {
    let cycle = Graph::new(&deps(&[&[2], &[0], &[1], &[]])).unwrap_err();
    match &cycle {
        GraphError::Cycle { cycle } => {
            assert_eq!(cycle.first(), cycle.last());
            let mut members = cycle[1..].to_vec();
            members.sort();
            assert_eq!(members, vec![0, 1, 2]);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(cycle.to_string().contains("cycle"), "{cycle}");
    // A node behind a cycle is not part of the reported cycle.
    let behind = Graph::new(&deps(&[&[1], &[2], &[1]])).unwrap_err();
    assert_eq!(
        behind,
        GraphError::Cycle {
            cycle: vec![1, 2, 1]
        }
    );
    let self_loop = Graph::new(&deps(&[&[], &[1]])).unwrap_err();
    assert_eq!(self_loop, GraphError::Cycle { cycle: vec![1, 1] });
    let range = Graph::new(&deps(&[&[], &[5]])).unwrap_err();
    assert_eq!(
        range,
        GraphError::UnknownDependency {
            node: 1,
            dependency: 5,
            len: 2
        }
    );
    assert!(matches!(
        Graph::new(&[Node::new(vec![], f64::NAN)]),
        Err(GraphError::BadWeight { node: 0, .. })
    ));
    assert!(Graph::new(&[]).unwrap().is_empty());
}

#[test]
fn five_hundred_random_nodes_each_run_exactly_once() {
    let nodes = random_dag(500, 42);
    let graph = Graph::new(&nodes).unwrap();
    let names: Vec<String> = (0..500).map(|n| format!("package-{n}")).collect();
    let runs: Vec<AtomicUsize> = (0..500).map(|_| AtomicUsize::new(0)).collect();
    let report = run(
        &graph,
        &RunOptions::new(2),
        |node, _| {
            runs[node].fetch_add(1, Ordering::SeqCst);
            if node % 50 == 0 {
                thread::yield_now();
            }
            // Borrowed results are fine: the success type need not be 'static.
            Ok::<_, String>(names[node].as_str())
        },
        |_| {},
    );
    assert!(report.all_succeeded());
    for node in 0..500 {
        assert_eq!(runs[node].load(Ordering::SeqCst), 1, "node {node}");
        assert_eq!(
            report.statuses[node],
            Status::Succeeded(names[node].as_str())
        );
    }
}

#[test]
fn critical_path_beats_fissiles_blocking_queue() {
    // A worker that takes 1 (queued right after its dependency 0) sits blocked for 10 units.
    let blocking = Graph::new(&[
        Node::new(vec![], 10.0),
        Node::new(vec![0], 1.0),
        Node::new(vec![], 5.0),
        Node::new(vec![], 5.0),
    ])
    .unwrap();
    assert_eq!(least_deps_first_order(&blocking), vec![0, 1, 2, 3]);
    assert_eq!(simulate(&blocking, 2, Policy::LeastDepsFirstBlocking), 16.0);
    assert_eq!(simulate(&blocking, 2, Policy::CriticalPath), 11.0);
    // Short packages queued first delay the long chain that decides the makespan.
    let mut chain = (0..10).map(|_| Node::new(vec![], 1.0)).collect::<Vec<_>>();
    chain.push(Node::new(vec![], 10.0));
    chain.push(Node::new(vec![10], 10.0));
    chain.push(Node::new(vec![11], 10.0));
    let chain = Graph::new(&chain).unwrap();
    for graph in [&blocking, &chain] {
        let cp = simulate(graph, 2, Policy::CriticalPath);
        let fifo = simulate(graph, 2, Policy::LeastDepsFirstBlocking);
        assert!(cp < fifo, "{cp} vs {fifo}");
        for makespan in [cp, fifo] {
            assert!(makespan >= graph.lower_bound(2));
            assert!(makespan >= graph.critical_path().max(graph.total_weight() / 2.0));
        }
    }
    assert_eq!(simulate(&chain, 2, Policy::CriticalPath), 30.0);
    assert_eq!(simulate(&chain, 2, Policy::LeastDepsFirstBlocking), 35.0);
}

#[test]
fn simulated_makespans_respect_the_bounds() {
    for seed in 0..20 {
        let graph = Graph::new(&random_dag(120, seed)).unwrap();
        let order = least_deps_first_order(&graph);
        let mut position = vec![0; graph.len()];
        for (i, &node) in order.iter().enumerate() {
            position[node] = i;
        }
        for node in 0..graph.len() {
            for &dep in graph.dependencies(node) {
                assert!(
                    position[dep] < position[node],
                    "fissile's queue is topological"
                );
            }
        }
        for workers in [1, 2, 4] {
            let bound = graph.lower_bound(workers);
            let cp = schedule(&graph, workers, Policy::CriticalPath);
            let fifo = simulate(&graph, workers, Policy::LeastDepsFirstBlocking);
            assert!(cp.makespan >= bound - 1e-9 && fifo >= bound - 1e-9);
            // Graham: a list schedule never idles a worker while a node is ready.
            let m = workers as f64;
            let graham = graph.total_weight() / m + (1.0 - 1.0 / m) * graph.critical_path();
            assert!(
                cp.makespan <= graham + 1e-9,
                "seed {seed}, {workers} workers"
            );
            for node in 0..graph.len() {
                for &dep in graph.dependencies(node) {
                    assert!(cp.finish[dep] <= cp.start[node]);
                }
            }
        }
    }
}

#[test]
fn cancel_token_callbacks() {
    let token = CancelToken::new();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let id = token.on_cancel(move || {
        h.fetch_add(1, Ordering::SeqCst);
    });
    let h = hits.clone();
    let removed = token.on_cancel(move || {
        h.fetch_add(100, Ordering::SeqCst);
    });
    assert!(id.is_some());
    assert!(token.remove_callback(removed.unwrap()));
    assert!(!token.wait_timeout(Duration::from_millis(1)));
    assert!(token.cancel());
    assert!(!token.cancel(), "only the first cancel counts");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    // Registered after the fact: runs at once.
    let h = hits.clone();
    assert!(token
        .on_cancel(move || {
            h.fetch_add(10, Ordering::SeqCst);
        })
        .is_none());
    assert_eq!(hits.load(Ordering::SeqCst), 11);
    assert!(token.is_cancelled() && token.clone().wait_timeout(Duration::from_secs(5)));
}

#[test]
fn a_panicking_event_callback_stops_the_run() {
    let graph = Graph::new(&deps(&[&[], &[0], &[]])).unwrap();
    let told_to_stop = AtomicBool::new(false);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run(
            &graph,
            &RunOptions::new(1),
            |_, token| -> Result<(), String> {
                // Without the stop this would wait 30 s and the test would still pass, slowly.
                if token.wait_timeout(Duration::from_secs(30)) {
                    told_to_stop.store(true, Ordering::SeqCst);
                    return Err("stopped".into());
                }
                Ok(())
            },
            |event| {
                if let Event::Started(_) = event {
                    panic!("progress display bug");
                }
            },
        )
    }));
    assert!(result.is_err());
    assert!(told_to_stop.load(Ordering::SeqCst));
}

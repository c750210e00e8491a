//! The compilation plan: the package graph across all given releases, checked (missing
//! dependencies, cycles), narrowed (role manifest, `--only-releases`), de-duplicated (a package
//! with the same name, fingerprint and dependencies in several releases is compiled once) and
//! put in a deterministic topological order. The packages of a compiled release are nodes too,
//! marked with their stemcell: they are imported, never compiled, and never merged with a
//! source package of the same name and fingerprint.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::PathBuf;

mod groups;
mod load;
pub mod role_manifest;

pub use groups::InstanceGroup;
pub use load::{load_plan, LoadPlanError, PlanRequest};

use crate::release::{Release, Stemcell};
use role_manifest::{RoleJob, RoleManifest};

/// Index of a release in [`Plan::releases`].
pub type ReleaseId = usize;
/// Index of a unique package in [`Plan::nodes`].
pub type NodeId = usize;

#[derive(Debug)]
pub struct Node {
    pub name: String,
    pub fingerprint: String,
    /// Direct dependencies; they always come earlier in [`Plan::nodes`].
    pub dependencies: Vec<NodeId>,
    /// Every (release, package index) this unit stands for; the first one is used to stage it.
    pub members: Vec<(ReleaseId, usize)>,
    /// For a package of a compiled release: the stemcell it was compiled for. Such a node is
    /// imported from its archive, not compiled.
    pub compiled_for: Option<Stemcell>,
}

impl Node {
    pub fn is_compiled(&self) -> bool {
        self.compiled_for.is_some()
    }
}

#[derive(Debug)]
pub struct Plan {
    pub releases: Vec<Release>,
    /// Unique packages in compile order (dependencies first).
    pub nodes: Vec<Node>,
    /// For each release, for each of its packages: the node it compiles in, if selected.
    pub node_of: Vec<Vec<Option<NodeId>>>,
}

#[derive(thiserror::Error, Debug)]
pub enum PlanError {
    #[error("{path}: package {package:?} depends on {dependency:?}, which release {release:?} does not have")]
    MissingDependency {
        path: PathBuf,
        release: String,
        package: String,
        dependency: String,
    },
    #[error("{path}: release {release:?} has a cycle in its packages' dependencies: {}", cycle.join(" -> "))]
    Cycle {
        path: PathBuf,
        release: String,
        cycle: Vec<String>,
    },
    #[error("--only-releases names {name:?}, but the releases given are: {known}")]
    UnknownRelease { name: String, known: String },
    #[error("{manifest}: job {job:?} (instance group {group:?}) names release {release:?}, which was not given; releases given: {known}")]
    RoleReleaseMissing {
        manifest: PathBuf,
        group: String,
        job: String,
        release: String,
        known: String,
    },
    #[error("{manifest}: job {job:?} (instance group {group:?}) does not name its release, and several releases were given")]
    RoleReleaseAmbiguous {
        manifest: PathBuf,
        group: String,
        job: String,
    },
    #[error("{manifest}: release {release:?} has no job {job:?} (instance group {group:?})")]
    RoleJobMissing {
        manifest: PathBuf,
        group: String,
        job: String,
        release: String,
    },
    #[error("{manifest}: job {job:?} of release {release:?} needs package {package:?}, which the release does not have")]
    JobPackageMissing {
        manifest: PathBuf,
        job: String,
        release: String,
        package: String,
    },
    #[error("releases {first:?} ({first_path}) and {second:?} ({second_path}) have the same name")]
    DuplicateRelease {
        first: String,
        first_path: PathBuf,
        second: String,
        second_path: PathBuf,
    },
}

/// What to compile.
#[derive(Default)]
pub struct Selection<'a> {
    pub only_releases: Option<&'a [String]>,
    pub role_manifest: Option<&'a RoleManifest>,
}

impl Plan {
    pub fn build(releases: Vec<Release>, selection: &Selection<'_>) -> Result<Plan, PlanError> {
        for (i, a) in releases.iter().enumerate() {
            if let Some(b) = releases[..i].iter().find(|b| b.name == a.name) {
                return Err(PlanError::DuplicateRelease {
                    first: b.name.clone(),
                    first_path: b.path.clone(),
                    second: a.name.clone(),
                    second_path: a.path.clone(),
                });
            }
        }
        let known = || {
            releases
                .iter()
                .map(|r| r.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut release_selected = vec![true; releases.len()];
        if let Some(only) = selection.only_releases {
            for name in only {
                if !releases.iter().any(|r| &r.name == name) {
                    return Err(PlanError::UnknownRelease {
                        name: name.clone(),
                        known: known(),
                    });
                }
            }
            for (i, r) in releases.iter().enumerate() {
                release_selected[i] = only.contains(&r.name);
            }
        }

        let mut orders = Vec::with_capacity(releases.len());
        for release in &releases {
            orders.push(topological_order(release)?);
        }

        let wanted = match selection.role_manifest {
            Some(manifest) => role_closure(&releases, &release_selected, manifest)?,
            None => releases
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    if release_selected[i] {
                        (0..r.packages.len()).collect()
                    } else {
                        HashSet::new()
                    }
                })
                .collect(),
        };

        let mut nodes: Vec<Node> = Vec::new();
        let mut node_of: Vec<Vec<Option<NodeId>>> = releases
            .iter()
            .map(|r| vec![None; r.packages.len()])
            .collect();
        // A compiled package is also told apart by its archive: two compiled releases with
        // different files for one package must each re-export their own.
        type Identity = (String, String, Vec<NodeId>, Option<(Stemcell, String)>);
        let mut by_identity: HashMap<Identity, NodeId> = HashMap::new();
        for (rid, release) in releases.iter().enumerate() {
            let index: HashMap<&str, usize> = release
                .packages
                .iter()
                .enumerate()
                .map(|(i, p)| (p.name.as_str(), i))
                .collect();
            for &pid in &orders[rid] {
                if !wanted[rid].contains(&pid) {
                    continue;
                }
                let package = &release.packages[pid];
                let dependencies: Vec<NodeId> = package
                    .dependencies
                    .iter()
                    .map(|d| {
                        node_of[rid][index[d.as_str()]]
                            .expect("dependencies are selected and ordered first")
                    })
                    .collect();
                let mut identity_deps = dependencies.clone();
                identity_deps.sort();
                identity_deps.dedup();
                let identity = (
                    package.name.clone(),
                    package.fingerprint.clone(),
                    identity_deps,
                    release
                        .stemcell
                        .clone()
                        .map(|s| (s, package.sha1.clone().unwrap_or_default())),
                );
                let id = *by_identity.entry(identity).or_insert_with(|| {
                    nodes.push(Node {
                        name: package.name.clone(),
                        fingerprint: package.fingerprint.clone(),
                        dependencies,
                        members: Vec::new(),
                        compiled_for: release.stemcell.clone(),
                    });
                    nodes.len() - 1
                });
                nodes[id].members.push((rid, pid));
                node_of[rid][pid] = Some(id);
            }
        }
        let mut plan = Plan {
            releases,
            nodes,
            node_of,
        };
        plan.sort_nodes();
        Ok(plan)
    }

    /// Reorders nodes into a deterministic topological order: among ready nodes, by name then
    /// fingerprint, so the same input always prints the same order.
    fn sort_nodes(&mut self) {
        let n = self.nodes.len();
        let mut remaining: Vec<usize> = self
            .nodes
            .iter()
            .map(|node| node.dependencies.len())
            .collect();
        let mut dependants: Vec<Vec<NodeId>> = vec![Vec::new(); n];
        for (id, node) in self.nodes.iter().enumerate() {
            for &d in &node.dependencies {
                dependants[d].push(id);
            }
        }
        let key = |id: NodeId| {
            (
                self.nodes[id].name.clone(),
                self.nodes[id].fingerprint.clone(),
                id,
            )
        };
        let mut ready: BTreeSet<(String, String, NodeId)> =
            (0..n).filter(|&i| remaining[i] == 0).map(key).collect();
        let mut order = Vec::with_capacity(n);
        while let Some(first) = ready.pop_first() {
            let id = first.2;
            order.push(id);
            for &d in &dependants[id] {
                remaining[d] -= 1;
                if remaining[d] == 0 {
                    ready.insert(key(d));
                }
            }
        }
        debug_assert_eq!(
            order.len(),
            n,
            "cycles are rejected per release before this point"
        );
        let mut new_id = vec![0; n];
        for (new, &old) in order.iter().enumerate() {
            new_id[old] = new;
        }
        let mut old_nodes: Vec<Option<Node>> = std::mem::take(&mut self.nodes)
            .into_iter()
            .map(Some)
            .collect();
        self.nodes = order
            .iter()
            .map(|&old| {
                let mut node = old_nodes[old].take().expect("each node once");
                for d in &mut node.dependencies {
                    *d = new_id[*d];
                }
                node
            })
            .collect();
        for ids in &mut self.node_of {
            for id in ids.iter_mut().flatten() {
                *id = new_id[*id];
            }
        }
    }

    /// Whether any node must be compiled (rather than imported from a compiled release).
    pub fn needs_compiling(&self) -> bool {
        self.nodes.iter().any(|n| !n.is_compiled())
    }

    /// A display name per node: the package name, qualified with its release where two
    /// different units share a name.
    pub fn node_label(&self, id: NodeId) -> String {
        let node = &self.nodes[id];
        let shared = self.nodes.iter().filter(|n| n.name == node.name).count() > 1;
        if shared {
            let (rid, _) = node.members[0];
            format!("{}/{}", self.releases[rid].name, node.name)
        } else {
            node.name.clone()
        }
    }
}

/// Packages in dependency order, or the missing dependency / cycle that prevents one.
fn topological_order(release: &Release) -> Result<Vec<usize>, PlanError> {
    let index: HashMap<&str, usize> = release
        .packages
        .iter()
        .enumerate()
        .map(|(i, p)| (p.name.as_str(), i))
        .collect();
    for p in &release.packages {
        for d in &p.dependencies {
            if !index.contains_key(d.as_str()) {
                return Err(PlanError::MissingDependency {
                    path: release.path.clone(),
                    release: release.name.clone(),
                    package: p.name.clone(),
                    dependency: d.clone(),
                });
            }
        }
    }
    // Depth-first search with colours; the grey stack is the cycle when we meet a grey node.
    #[derive(Clone, Copy, PartialEq)]
    enum Colour {
        White,
        Grey,
        Black,
    }
    let n = release.packages.len();
    let mut colour = vec![Colour::White; n];
    let mut order = Vec::with_capacity(n);
    let mut names: Vec<(usize, &str)> = release
        .packages
        .iter()
        .enumerate()
        .map(|(i, p)| (i, p.name.as_str()))
        .collect();
    names.sort_by_key(|&(_, name)| name);
    for (start, _) in names {
        if colour[start] != Colour::White {
            continue;
        }
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        colour[start] = Colour::Grey;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            let deps = &release.packages[node].dependencies;
            if *next < deps.len() {
                let dep = index[deps[*next].as_str()];
                *next += 1;
                match colour[dep] {
                    Colour::White => {
                        colour[dep] = Colour::Grey;
                        stack.push((dep, 0));
                    }
                    Colour::Grey => {
                        let from = stack
                            .iter()
                            .position(|&(n, _)| n == dep)
                            .expect("grey nodes are on the stack");
                        let mut cycle: Vec<String> = stack[from..]
                            .iter()
                            .map(|&(n, _)| release.packages[n].name.clone())
                            .collect();
                        cycle.push(release.packages[dep].name.clone());
                        return Err(PlanError::Cycle {
                            path: release.path.clone(),
                            release: release.name.clone(),
                            cycle,
                        });
                    }
                    Colour::Black => {}
                }
            } else {
                colour[node] = Colour::Black;
                order.push(node);
                stack.pop();
            }
        }
    }
    Ok(order)
}

/// Where a role manifest's job is: its release (the one it names, or the only one there is)
/// and its index in that release's jobs.
pub(super) fn locate_role_job(
    releases: &[Release],
    manifest: &RoleManifest,
    role_job: &RoleJob,
) -> Result<(ReleaseId, usize), PlanError> {
    let rid = match &role_job.release {
        Some(name) => releases
            .iter()
            .position(|r| &r.name == name)
            .ok_or_else(|| PlanError::RoleReleaseMissing {
                manifest: manifest.path.clone(),
                group: role_job.instance_group.clone(),
                job: role_job.job.clone(),
                release: name.clone(),
                known: releases
                    .iter()
                    .map(|r| r.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })?,
        None if releases.len() == 1 => 0,
        None => {
            return Err(PlanError::RoleReleaseAmbiguous {
                manifest: manifest.path.clone(),
                group: role_job.instance_group.clone(),
                job: role_job.job.clone(),
            })
        }
    };
    let release = &releases[rid];
    let job = release
        .jobs
        .iter()
        .position(|j| j.name == role_job.job)
        .ok_or_else(|| PlanError::RoleJobMissing {
            manifest: manifest.path.clone(),
            group: role_job.instance_group.clone(),
            job: role_job.job.clone(),
            release: release.name.clone(),
        })?;
    Ok((rid, job))
}

/// Per release, the packages the role manifest's jobs need, with their transitive dependencies.
fn role_closure(
    releases: &[Release],
    selected: &[bool],
    manifest: &RoleManifest,
) -> Result<Vec<HashSet<usize>>, PlanError> {
    let mut wanted: Vec<HashSet<usize>> = vec![HashSet::new(); releases.len()];
    for role_job in &manifest.jobs {
        let (rid, job) = locate_role_job(releases, manifest, role_job)?;
        if !selected[rid] {
            continue;
        }
        let release = &releases[rid];
        let job = &release.jobs[job];
        let mut stack: Vec<usize> = Vec::new();
        for p in &job.packages {
            let pid = release
                .packages
                .iter()
                .position(|x| &x.name == p)
                .ok_or_else(|| PlanError::JobPackageMissing {
                    manifest: manifest.path.clone(),
                    job: job.name.clone(),
                    release: release.name.clone(),
                    package: p.clone(),
                })?;
            stack.push(pid);
        }
        while let Some(pid) = stack.pop() {
            if wanted[rid].insert(pid) {
                for d in &release.packages[pid].dependencies {
                    if let Some(dep) = release.packages.iter().position(|x| &x.name == d) {
                        stack.push(dep);
                    }
                }
            }
        }
    }
    Ok(wanted)
}

impl Plan {
    /// Direct and indirect dependencies of `id`, in plan (compile) order, without `id`.
    pub fn dependency_closure(&self, id: NodeId) -> Vec<NodeId> {
        let mut wanted = vec![false; self.nodes.len()];
        let mut stack: Vec<NodeId> = self.nodes[id].dependencies.clone();
        while let Some(n) = stack.pop() {
            if !wanted[n] {
                wanted[n] = true;
                stack.extend(self.nodes[n].dependencies.iter().copied());
            }
        }
        (0..self.nodes.len()).filter(|&n| wanted[n]).collect()
    }

    /// A plan of only `keep` (which must be closed under dependencies), same releases.
    pub fn restricted_to(&self, keep: &[NodeId]) -> Plan {
        let mut new_id = vec![None; self.nodes.len()];
        for (new, &old) in keep.iter().enumerate() {
            new_id[old] = Some(new);
        }
        let nodes = keep
            .iter()
            .map(|&old| {
                let node = &self.nodes[old];
                Node {
                    name: node.name.clone(),
                    fingerprint: node.fingerprint.clone(),
                    dependencies: node
                        .dependencies
                        .iter()
                        .map(|d| {
                            new_id[*d].expect("restricted plans are closed under dependencies")
                        })
                        .collect(),
                    members: node.members.clone(),
                    compiled_for: node.compiled_for.clone(),
                }
            })
            .collect();
        let node_of = self
            .node_of
            .iter()
            .map(|ids| ids.iter().map(|id| id.and_then(|id| new_id[id])).collect())
            .collect();
        Plan {
            releases: self.releases.clone(),
            nodes,
            node_of,
        }
    }

    /// The node a user means by `name` (a package name, or `release/name` when ambiguous).
    pub fn find(&self, name: &str) -> Result<NodeId, String> {
        let matches: Vec<NodeId> = (0..self.nodes.len())
            .filter(|&id| self.nodes[id].name == name || self.node_label(id) == name)
            .collect();
        match matches.as_slice() {
            [one] => Ok(*one),
            [] => Err(format!(
                "no package {name:?} in the given releases; packages: {}",
                (0..self.nodes.len())
                    .map(|id| self.node_label(id))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            _ => Err(format!(
                "{name:?} is in several releases: say which, as {}",
                matches
                    .iter()
                    .map(|&id| self.node_label(id))
                    .collect::<Vec<_>>()
                    .join(" or ")
            )),
        }
    }
}

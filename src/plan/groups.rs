//! The instance groups of a role manifest, each with the jobs it runs and the plan's packages
//! those jobs need (their `packages` and all their dependencies): what goes into one instance
//! group's image.

use super::role_manifest::RoleManifest;
use super::{NodeId, Plan, PlanError, ReleaseId};

/// One instance group, resolved against a plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceGroup {
    pub name: String,
    /// (release, index in its `jobs`), in the manifest's order.
    pub jobs: Vec<(ReleaseId, usize)>,
    /// The packages its jobs need, dependencies included, in plan (compile) order.
    pub packages: Vec<NodeId>,
}

impl Plan {
    /// The instance groups of `manifest`, in its order. The plan must have been built with the
    /// same manifest (so that every package a group needs is in it).
    pub fn instance_groups(
        &self,
        manifest: &RoleManifest,
    ) -> Result<Vec<InstanceGroup>, PlanError> {
        let mut groups: Vec<InstanceGroup> = Vec::new();
        for role_job in &manifest.jobs {
            let (rid, job) = super::locate_role_job(&self.releases, manifest, role_job)?;
            let group = match groups
                .iter_mut()
                .position(|g| g.name == role_job.instance_group)
            {
                Some(i) => &mut groups[i],
                None => {
                    groups.push(InstanceGroup {
                        name: role_job.instance_group.clone(),
                        jobs: Vec::new(),
                        packages: Vec::new(),
                    });
                    groups.last_mut().expect("just pushed")
                }
            };
            if !group.jobs.contains(&(rid, job)) {
                group.jobs.push((rid, job));
            }
        }
        for group in &mut groups {
            let mut wanted = vec![false; self.nodes.len()];
            for &(rid, job) in &group.jobs {
                let release = &self.releases[rid];
                for package in &release.jobs[job].packages {
                    let node = release
                        .packages
                        .iter()
                        .position(|p| &p.name == package)
                        .and_then(|pid| self.node_of[rid][pid])
                        .ok_or_else(|| PlanError::JobPackageMissing {
                            manifest: manifest.path.clone(),
                            job: release.jobs[job].name.clone(),
                            release: release.name.clone(),
                            package: package.clone(),
                        })?;
                    wanted[node] = true;
                    for dep in self.dependency_closure(node) {
                        wanted[dep] = true;
                    }
                }
            }
            group.packages = (0..self.nodes.len()).filter(|&n| wanted[n]).collect();
        }
        Ok(groups)
    }
}

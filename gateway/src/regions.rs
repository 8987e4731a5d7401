//! The regions of the deployment as clients see them (`GET /regions`,
//! `welcome.regions`): the live instances of the directory grouped by
//! `SERVER_REGION`, each region with the public URLs its instances
//! announce.

use crate::bus::Instance;
use pantheon_protocol::Region;
use std::collections::BTreeMap;

/// Groups `directory` (plus `own`, which is always live) by region, sorted
/// by name. A region's URL is the one most of its instances announce (ties:
/// the first in order), so one misconfigured instance does not redirect a
/// region's clients.
pub fn regions(own: Instance, directory: Option<Vec<Instance>>) -> Vec<Region> {
    let mut all = directory.unwrap_or_default();
    all.retain(|i| i.server != own.server);
    all.push(own);
    let mut by_region: BTreeMap<String, Vec<Instance>> = BTreeMap::new();
    for i in all {
        by_region.entry(i.region.clone()).or_default().push(i);
    }
    by_region
        .into_iter()
        .map(|(region, members)| Region {
            ws_url: most_common(members.iter().filter_map(|i| i.ws_url.as_deref())),
            wt_url: most_common(members.iter().filter_map(|i| i.wt_url.as_deref())),
            instances: members.len() as u32,
            region,
        })
        .collect()
}

fn most_common<'a>(urls: impl Iterator<Item = &'a str>) -> Option<String> {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for u in urls {
        *counts.entry(u).or_default() += 1;
    }
    let best = counts.values().copied().max()?;
    counts
        .into_iter()
        .find(|(_, n)| *n == best)
        .map(|(u, _)| u.to_owned())
}

/// Whether `welcome` carries the regions: only when some region can be
/// reached at a public URL (otherwise the list tells a client nothing).
pub fn worth_announcing(regions: &[Region]) -> bool {
    regions
        .iter()
        .any(|r| r.ws_url.is_some() || r.wt_url.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(server: &str, region: &str, ws: Option<&str>) -> Instance {
        Instance {
            server: server.into(),
            region: region.into(),
            ws_url: ws.map(str::to_owned),
            wt_url: None,
        }
    }

    #[test]
    fn groups_by_region_sorted_with_the_majority_url() {
        let own = inst("a", "us-east", Some("wss://us/ws"));
        let dir = vec![
            inst("a", "us-east", None), // stale copy of ourselves: replaced
            inst("c", "eu-west", Some("wss://eu/ws")),
            inst("d", "eu-west", Some("wss://eu/ws")),
            inst("e", "eu-west", Some("wss://wrong/ws")),
            inst("b", "us-east", None),
        ];
        let r = regions(own, Some(dir));
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].region, "eu-west");
        assert_eq!(r[0].instances, 3);
        assert_eq!(r[0].ws_url.as_deref(), Some("wss://eu/ws"));
        assert_eq!(r[1].region, "us-east");
        assert_eq!(r[1].instances, 2);
        assert_eq!(r[1].ws_url.as_deref(), Some("wss://us/ws"));
        assert!(worth_announcing(&r));
    }

    #[test]
    fn standalone_lists_itself() {
        let r = regions(inst("a", "local", None), None);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].instances, 1);
        assert!(!worth_announcing(&r));
    }
}

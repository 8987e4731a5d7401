//! Where commands go: one Redis through a pool, the primary the sentinels
//! name, or a Redis Cluster.

use super::*;
use redis::cluster_routing::{Route, SlotAddr};

/// Where commands go: a pool of connections to one Redis, or the one
/// multiplexed connection to a Redis Cluster (it routes by slot itself;
/// deadpool-redis's cluster manager cannot take TLS certificates).
pub(super) enum Commands {
    Single(deadpool_redis::Pool),
    Sentinel(Arc<Primary>),
    Cluster(Arc<OnceLock<ClusterConnection>>),
}

pub(super) enum Conn {
    Single(deadpool_redis::Connection),
    Sentinel(redis::aio::MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl redis::aio::ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Sentinel(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(cmd, offset, count),
            Self::Sentinel(c) => c.req_packed_commands(cmd, offset, count),
            Self::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        0
    }
}

/// Runs a pipeline and answers every command's reply (ignored or not). On a
/// cluster a pipeline must stay in one slot, so the commands are split by
/// the slot of their key (every command the bus pipelines has its key or
/// channel first): each slot's commands go as one pipeline, in order, and
/// the slots' pipelines run side by side. Commands for one key or channel —
/// one instance's messages to another, say — keep their order.
pub(super) async fn exec(
    conn: &mut Conn,
    pipe: &redis::Pipeline,
) -> redis::RedisResult<Vec<Value>> {
    match conn {
        Conn::Single(c) => all_replies(pipe).query_async(&mut **c).await,
        Conn::Sentinel(c) => all_replies(pipe).query_async(c).await,
        Conn::Cluster(c) => {
            let mut lanes: Vec<(Option<Route>, redis::Pipeline, Vec<usize>)> = Vec::new();
            for (at, cmd) in pipe.cmd_iter().enumerate() {
                let route = key_of(cmd).map(|key| Route::with_key(key, SlotAddr::Master));
                let lane = match lanes.iter_mut().find(|l| route.is_some() && l.0 == route) {
                    Some(lane) => lane,
                    None => {
                        lanes.push((route, redis::pipe(), Vec::new()));
                        lanes.last_mut().expect("just pushed")
                    }
                };
                lane.1.add_command(cmd.clone());
                lane.2.push(at);
            }
            let calls = lanes.into_iter().map(|(_, lane, at)| {
                let mut c = c.clone();
                async move {
                    lane.query_async::<Vec<Value>>(&mut c)
                        .await
                        .map(|r| (r, at))
                }
            });
            let mut replies = vec![Value::Nil; pipe.cmd_iter().count()];
            for lane in futures_util::future::join_all(calls).await {
                let (values, at) = lane?;
                for (value, i) in values.into_iter().zip(at) {
                    replies[i] = value;
                }
            }
            Ok(replies)
        }
    }
}

/// The key (or channel) a command routes by: its first argument.
fn key_of(cmd: &redis::Cmd) -> Option<&[u8]> {
    match cmd.args_iter().nth(1)? {
        redis::Arg::Simple(key) => Some(key),
        _ => None,
    }
}

/// The same commands with none of their replies ignored.
fn all_replies(pipe: &redis::Pipeline) -> redis::Pipeline {
    let mut all = redis::pipe();
    for cmd in pipe.cmd_iter() {
        all.add_command(cmd.clone());
    }
    all
}

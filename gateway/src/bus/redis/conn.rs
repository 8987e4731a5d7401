//! Where commands go: one Redis through a pool, or a Redis Cluster.

use super::*;

/// Where commands go: a pool of connections to one Redis, or the one
/// multiplexed connection to a Redis Cluster (it routes by slot itself;
/// deadpool-redis's cluster manager cannot take TLS certificates).
pub(super) enum Commands {
    Single(deadpool_redis::Pool),
    Cluster(Arc<OnceLock<ClusterConnection>>),
}

pub(super) enum Conn {
    Single(deadpool_redis::Connection),
    Cluster(ClusterConnection),
}

impl redis::aio::ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
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
            Self::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        0
    }
}

/// Runs a pipeline and answers every command's reply (ignored or not). On a
/// cluster a pipeline must stay in one slot, so the commands go out one by
/// one — still pipelined on the wire, in order per node.
pub(super) async fn exec(
    conn: &mut Conn,
    pipe: &redis::Pipeline,
) -> redis::RedisResult<Vec<Value>> {
    match conn {
        Conn::Single(c) => {
            let mut all = redis::pipe();
            for cmd in pipe.cmd_iter() {
                all.add_command(cmd.clone());
            }
            all.query_async(&mut **c).await
        }
        Conn::Cluster(c) => {
            let calls = pipe.cmd_iter().map(|cmd| {
                let mut c = c.clone();
                let cmd = cmd.clone();
                async move { cmd.query_async::<Value>(&mut c).await }
            });
            futures_util::future::join_all(calls)
                .await
                .into_iter()
                .collect()
        }
    }
}

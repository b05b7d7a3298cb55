//! The read-first stores' [`Floor`], once for MariaDB and SQLite, through
//! raw sqlx: the store's read, its claim upsert and its complete statement.

use steadfast::idempotency::RecordKey;

use crate::{
    bench::{BoxFuture, Floor},
    read_first::{ReadFirst, ReadFirstBench},
    source::Source,
    workload::times,
};

impl<DB: ReadFirst> Floor for ReadFirstBench<DB> {
    type Caller = Source<DB>;

    fn caller(&self, held: bool) -> BoxFuture<'_, Source<DB>> {
        Box::pin(Source::new(self.store.pool(), held))
    }

    fn select<'a>(&'a self, caller: &'a mut Source<DB>, key: &'a RecordKey) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            let (find, _, _) = DB::store_statements(&self.store);
            let mut connection = caller.connection().await;
            DB::select_record(&mut connection, find, key).await
        })
    }

    fn write<'a>(&'a self, caller: &'a mut Source<DB>, key: &'a RecordKey) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let (_, upsert, complete) = DB::store_statements(&self.store);
            let token = fastrand::i64(..);
            let times = times();
            {
                let mut connection = caller.connection().await;
                DB::claim_new(&mut connection, upsert, key, token, &times).await;
            }
            let mut connection = caller.connection().await;
            let done =
                DB::complete_claim(&mut connection, complete, key, token, times.expires_at).await;
            assert_eq!(DB::rows_affected(&done), 1);
        })
    }
}

//! The detect stage: between enrich and the sinks. Every event goes on unchanged, followed by
//! the alerts it raised; alerts are also offered to the webhooks, which never make it wait.

use tokio::sync::mpsc;

use crate::{
    detect::{webhook::Webhooks, Detector},
    event::{Event, EventBody},
};

pub async fn run(
    mut rx: mpsc::Receiver<Event>,
    tx: mpsc::Sender<Event>,
    mut detector: Detector,
    webhooks: Webhooks,
) -> anyhow::Result<()> {
    let mut alerts = Vec::new();
    while let Some(event) = rx.recv().await {
        detector.process(&event, &mut alerts);
        if tx.send(event).await.is_err() {
            anyhow::bail!("the sink stage stopped");
        }
        for alert in alerts.drain(..) {
            if matches!(alert.body, EventBody::Alert(_)) {
                webhooks.offer(&alert);
            }
            if tx.send(alert).await.is_err() {
                anyhow::bail!("the sink stage stopped");
            }
        }
    }
    // The input closed: the daemon is stopping. Keep what the baselines learnt.
    detector.shutdown();
    Ok(())
}

//! The detect stage: between enrich and the sinks. Every event goes on unchanged, followed by
//! the alerts it raised; alerts are also offered to the webhooks, which never make it wait.

use super::batch;
use crate::{
    detect::{webhook::Webhooks, Detector},
    event::{Event, EventBody},
};

pub async fn run(
    mut rx: batch::Receiver,
    tx: batch::Sender,
    mut detector: Detector,
    webhooks: Webhooks,
) -> anyhow::Result<()> {
    let mut alerts = Vec::new();
    while let Some(events) = rx.recv().await {
        detector.refresh_rules();
        let mut raised: Vec<(usize, Event)> = Vec::new();
        for (i, event) in events.iter().enumerate() {
            detector.process(event, &mut alerts);
            for alert in alerts.drain(..) {
                if matches!(alert.body, EventBody::Alert(_)) {
                    webhooks.offer(&alert);
                }
                raised.push((i, alert));
            }
        }
        let mut out = batch::with_inserted(events, raised);
        batch::send_all(&tx, &mut out, "respond").await?;
    }
    // The input closed: the daemon is stopping. Keep what the baselines learnt.
    detector.shutdown();
    Ok(())
}

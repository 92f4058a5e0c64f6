//! Reading an event back from its JSON (a spool record's payload), fast in the common case.
//!
//! `Event` derives `Deserialize`, and its body is flattened and tagged by `type`: serde then
//! buffers every key and value of the body into its generic `Content` tree before it knows
//! which kind it holds, and reads the tree a second time (an allocation per key and value).
//! That was a third of the ClickHouse shipper's time. Vigil always writes an event's own
//! fields first and `type` right after them (the order of `Event`'s fields), so a reader that
//! expects that order knows the kind before the body's first key and hands the rest of the map
//! straight to the kind's own struct.
//!
//! Written by hand because neither serde nor a maintained crate offers "the tag comes first"
//! for a flattened, internally tagged enum. Anything else — another order, a key it does not
//! know, a key twice — is not guessed at: the derived decoder reads the record instead, with
//! its own errors, so both paths accept exactly the same records and decode them equally (a
//! test compares them on every kind).

use std::{borrow::Cow, fmt, sync::Arc};

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};

use super::{Event, EventBody, EventType, Process};

/// `Event`'s own keys, which no body may use (`samples::common_keys` is checked against them).
const OWN_KEYS: [&str; 6] = ["mono_ns", "time_ns", "time", "host", "boot_id", "process"];

impl Event {
    /// An event from its JSON: in the order Vigil writes it without buffering, else through the
    /// derived decoder.
    pub fn from_json(json: &[u8]) -> serde_json::Result<Event> {
        let mut de = serde_json::Deserializer::from_slice(json);
        match de
            .deserialize_map(InOrder)
            .and_then(|e| de.end().map(|()| e))
        {
            Ok(event) => Ok(event),
            Err(_) => serde_json::from_slice(json),
        }
    }
}

/// A map key, borrowed from the input when it has no escapes (nearly always).
struct Key<'de>(Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// Reads `Event`'s own fields, then `type`, then hands the rest to the kind's body.
struct InOrder;

fn set<'de, T: de::Deserialize<'de>, A: MapAccess<'de>>(
    slot: &mut Option<T>,
    map: &mut A,
    key: &'static str,
) -> Result<(), A::Error> {
    if slot.is_some() {
        return Err(de::Error::duplicate_field(key));
    }
    *slot = Some(map.next_value()?);
    Ok(())
}

impl<'de> Visitor<'de> for InOrder {
    type Value = Event;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an event, its own fields before `type`")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Event, A::Error> {
        let mut mono_ns: Option<u64> = None;
        let mut time_ns: Option<i64> = None;
        let mut time: Option<String> = None;
        let mut host: Option<Arc<str>> = None;
        let mut boot_id: Option<Arc<str>> = None;
        let mut process: Option<Process> = None;
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            match key.as_ref() {
                "mono_ns" => set(&mut mono_ns, &mut map, "mono_ns")?,
                "time_ns" => set(&mut time_ns, &mut map, "time_ns")?,
                "time" => set(&mut time, &mut map, "time")?,
                "host" => set(&mut host, &mut map, "host")?,
                "boot_id" => set(&mut boot_id, &mut map, "boot_id")?,
                "process" => set(&mut process, &mut map, "process")?,
                "type" => {
                    let kind: EventType = map.next_value()?;
                    let body = EventBody::from_fields(kind, BodyFields(&mut map))?;
                    return Ok(Event {
                        mono_ns: mono_ns.ok_or_else(|| de::Error::missing_field("mono_ns"))?,
                        time_ns: time_ns.ok_or_else(|| de::Error::missing_field("time_ns"))?,
                        time: time.ok_or_else(|| de::Error::missing_field("time"))?,
                        host: host.unwrap_or_default(),
                        boot_id: boot_id.unwrap_or_default(),
                        process: process.ok_or_else(|| de::Error::missing_field("process"))?,
                        body,
                    });
                }
                other => return Err(de::Error::unknown_field(other, &OWN_KEYS)),
            }
        }
        Err(de::Error::missing_field("type"))
    }
}

/// What follows `type`: the body's fields. One of the event's own keys there means the record
/// was not written in Vigil's order, and the derived decoder must read it.
struct BodyFields<'a, A>(&'a mut A);

impl<'de, A: MapAccess<'de>> MapAccess<'de> for BodyFields<'_, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        let Some(Key(key)) = self.0.next_key::<Key<'de>>()? else {
            return Ok(None);
        };
        if OWN_KEYS.contains(&key.as_ref()) || key == "type" {
            return Err(de::Error::custom(format_args!(
                "`{key}` after `type`: not in the order Vigil writes"
            )));
        }
        match key {
            Cow::Borrowed(k) => seed
                .deserialize(de::value::BorrowedStrDeserializer::new(k))
                .map(Some),
            Cow::Owned(k) => seed
                .deserialize(de::value::StringDeserializer::new(k))
                .map(Some),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        self.0.next_value_seed(seed)
    }
}

/// Writes events as JSON, byte for byte as `serde_json::to_writer(event)` does, reusing what
/// an event shares with its process's other events: `"host":…,"boot_id":…,"process":{…}`,
/// kept for the last few processes written.
///
/// Serializing was most of the sink stage: serde escapes and writes every key and string, and
/// the process's twenty-odd keys, its program and names are the same on each of its events
/// (half of an open's record). The kept bytes are what serde wrote for them, reused only when
/// the host, boot and process are equal to a kept one's; the body is serde's own output. A
/// test compares whole events with `serde_json::to_vec` across every kind, processes changing
/// between them.
pub struct EventWriter {
    kept: Vec<KeptProcess>,
    /// The slot the next process not kept replaces (round robin).
    next: usize,
}

struct KeptProcess {
    host: Arc<str>,
    boot_id: Arc<str>,
    process: Process,
    json: Vec<u8>,
    /// Where the process's value starts in `json`.
    process_at: usize,
}

impl Default for EventWriter {
    fn default() -> Self {
        EventWriter::new()
    }
}

impl EventWriter {
    /// Processes kept: a session's few busy processes interleave (a shell, its pipeline).
    const KEPT: usize = 8;

    pub fn new() -> EventWriter {
        EventWriter {
            kept: Vec::with_capacity(Self::KEPT),
            next: 0,
        }
    }

    /// Appends `event`'s JSON to `out`; where in `out` the value of its `process` key is (the
    /// spool's chain hashes that part once per process: `spool::frame::process_span`).
    pub fn write(
        &mut self,
        out: &mut Vec<u8>,
        event: &Event,
    ) -> serde_json::Result<std::ops::Range<usize>> {
        // `Event`'s fields in their order, then the body's (flattened: `type` first).
        out.extend_from_slice(b"{\"mono_ns\":");
        serde_json::to_writer(&mut *out, &event.mono_ns)?;
        out.extend_from_slice(b",\"time_ns\":");
        serde_json::to_writer(&mut *out, &event.time_ns)?;
        out.extend_from_slice(b",\"time\":");
        serde_json::to_writer(&mut *out, &event.time)?;
        let kept = self.shared(event)?;
        let process = out.len() + kept.process_at..out.len() + kept.json.len();
        out.extend_from_slice(&kept.json);
        let body = out.len();
        serde_json::to_writer(&mut *out, &event.body)?;
        // The body alone is an object, `{"type":…}`: its fields continue the event's.
        out[body] = b',';
        Ok(process)
    }

    /// `,"host":…,"boot_id":…,"process":{…}` of `event`.
    fn shared(&mut self, event: &Event) -> serde_json::Result<&KeptProcess> {
        let found = self.kept.iter().position(|k| {
            k.process == event.process && k.host == event.host && k.boot_id == event.boot_id
        });
        let slot = match found {
            Some(slot) => slot,
            None => {
                let mut json = Vec::with_capacity(512);
                json.extend_from_slice(b",\"host\":");
                serde_json::to_writer(&mut json, &event.host)?;
                json.extend_from_slice(b",\"boot_id\":");
                serde_json::to_writer(&mut json, &event.boot_id)?;
                json.extend_from_slice(b",\"process\":");
                let process_at = json.len();
                serde_json::to_writer(&mut json, &event.process)?;
                let kept = KeptProcess {
                    host: event.host.clone(),
                    boot_id: event.boot_id.clone(),
                    process: event.process.clone(),
                    json,
                    process_at,
                };
                if self.kept.len() < Self::KEPT {
                    self.kept.push(kept);
                    self.kept.len() - 1
                } else {
                    let slot = self.next;
                    self.next = (self.next + 1) % Self::KEPT;
                    self.kept[slot] = kept;
                    slot
                }
            }
        };
        Ok(&self.kept[slot])
    }
}

#[cfg(test)]
mod tests {
    use super::super::samples::{common_keys, sample};
    use super::*;

    #[test]
    fn own_keys_are_the_events_own() {
        let mut own: Vec<String> = OWN_KEYS.iter().map(|k| k.to_string()).collect();
        own.sort();
        let mut common = common_keys();
        common.sort();
        assert_eq!(own, common);
    }

    /// The writer's bytes are serde's for every kind, with the process kept, replaced and
    /// changed in one field between events, and hostile bytes in the kept strings.
    #[test]
    fn the_writer_writes_what_serde_writes() {
        let mut writer = EventWriter::new();
        let mut events = Vec::new();
        for (i, t) in EventType::ALL.iter().enumerate() {
            let mut e = sample(*t);
            events.push(e.clone());
            // The same process again, then a process that differs in one field only.
            events.push(e.clone());
            e.process.pid += i as u32;
            events.push(e.clone());
            e.process.user = Some("\"quoted\"\n\u{1b}[31m".into());
            e.process.comm = crate::event::RawBytes(b"\xff\x00bin".to_vec());
            events.push(e.clone());
            e.host = "other-host".into();
            events.push(e.clone());
            e.process = Process::known_by_pid(7);
            events.push(e);
        }
        // More processes than are kept, revisited after they were replaced.
        let first = events.clone();
        events.extend(first);
        for e in &events {
            // Written after another event, as the sink's batches are.
            let mut out = b"{}".to_vec();
            let process = writer.write(&mut out, e).unwrap();
            let out = &out[2..];
            assert_eq!(
                String::from_utf8_lossy(out),
                String::from_utf8_lossy(&serde_json::to_vec(e).unwrap()),
                "{}",
                e.body.type_name()
            );
            // Where it says the process is, is where the chain's reader finds it.
            let process = process.start - 2..process.end - 2;
            assert_eq!(
                Some(process.clone()),
                crate::spool::frame::process_span(out),
                "{}",
                e.body.type_name()
            );
            assert_eq!(&out[process], serde_json::to_vec(&e.process).unwrap());
        }
    }

    #[test]
    fn every_kind_reads_back_the_same_through_both_decoders() {
        for t in EventType::ALL {
            let e = sample(*t);
            let json = serde_json::to_vec(&e).unwrap();
            let mut de = serde_json::Deserializer::from_slice(&json);
            let fast = de.deserialize_map(InOrder).unwrap_or_else(|err| {
                panic!("{t}: the in-order decoder refused what Vigil wrote: {err}")
            });
            let derived: Event = serde_json::from_slice(&json).unwrap();
            assert_eq!(fast, e, "{t}");
            assert_eq!(derived, e, "{t}");
            assert_eq!(Event::from_json(&json).unwrap(), e, "{t}");
        }
    }

    /// Records in another order, with escaped keys, with unknown keys, or malformed, decode
    /// (or fail) exactly as the derived decoder has them.
    #[test]
    fn records_in_another_order_or_malformed_are_the_derived_decoders() {
        let e = sample(EventType::Open);
        let value = serde_json::to_value(&e).unwrap();
        let mut fields: Vec<(String, serde_json::Value)> = value
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        // `type` first, then everything else; then the event's own fields last.
        fields.sort_by_key(|(k, _)| k != "type");
        let type_first = object(&fields);
        fields.sort_by_key(|(k, _)| common_keys().contains(k));
        let own_last = object(&fields);
        for json in [type_first, own_last] {
            assert!(serde_json::Deserializer::from_str(&json)
                .deserialize_map(InOrder)
                .is_err());
            assert_eq!(Event::from_json(json.as_bytes()).unwrap(), e, "{json}");
        }
        // An escaped key is the same key.
        let json = serde_json::to_string(&e)
            .unwrap()
            .replace("\"mono_ns\"", "\"mono\\u005fns\"");
        assert_eq!(Event::from_json(json.as_bytes()).unwrap(), e);
        // A key twice, an unknown key, trailing bytes, a truncated record: what the derived
        // decoder says.
        let json = serde_json::to_string(&e).unwrap();
        let twice = json.replacen("{", "{\"mono_ns\":1,", 1);
        let unknown = json.replacen("{", "{\"extra\":1,", 1);
        let trailing = format!("{json} {{}}");
        let truncated = json[..json.len() - 5].to_string();
        for bad in [twice, unknown, trailing, truncated] {
            let derived = serde_json::from_slice::<Event>(bad.as_bytes());
            let ours = Event::from_json(bad.as_bytes());
            assert_eq!(
                ours.as_ref().map_err(|e| e.to_string()),
                derived.as_ref().map_err(|e| e.to_string()),
                "{bad}"
            );
        }
    }

    fn object(fields: &[(String, serde_json::Value)]) -> String {
        let parts: Vec<String> = fields
            .iter()
            .map(|(k, v)| format!("{}:{}", serde_json::to_string(k).unwrap(), v))
            .collect();
        format!("{{{}}}", parts.join(","))
    }
}

//! Generated code names everything through `::connscope::__private`: this test shadows the prelude
//! names generated code could capture (`Result`, `Option`, `Ok`, `Some`, `None`, `Box`) and
//! uses both macros under `deny(warnings)` and a few allow-by-default lints.
#![deny(warnings, unused_qualifications, missing_docs, unused_results)]

/// Both macros, next to shadowed prelude names.
pub mod shadowed {
    use connscope::{Conn, Connection, Provider, Secret, cached_resource};

    #[allow(dead_code)]
    struct Result;
    #[allow(dead_code)]
    struct Option;
    #[allow(dead_code)]
    struct Ok;
    #[allow(dead_code)]
    struct Some;
    #[allow(dead_code)]
    struct None;
    #[allow(dead_code)]
    struct Box;

    /// A provider whose settings use every kind of field.
    #[derive(Connection, serde::Deserialize)]
    #[connection(scope = "session", ttl = "1h", max_entries = 10, health_check = "30s")]
    pub struct Shadowed {
        /// A text field.
        pub user: String,
        /// A password.
        #[connection(secret, label = "Pass phrase")]
        pub password: Secret,
        /// Optional, with a default.
        #[connection(default = 7)]
        pub retries: core::option::Option<u8>,
        /// Set by the app.
        #[connection(fixed)]
        pub hosts: Vec<String>,
        /// Read with serde's attributes.
        #[connection(fixed)]
        #[serde(default, deserialize_with = "lenient")]
        pub port: u16,
        /// Runtime state.
        #[serde(skip)]
        pub calls: core::option::Option<u8>,
    }

    fn lenient<'de, D: serde::Deserializer<'de>>(d: D) -> core::result::Result<u16, D::Error> {
        <u16 as serde::Deserialize>::deserialize(d)
    }

    impl Provider for Shadowed {
        type Raw = String;
        type Error = std::io::Error;
        async fn connect(&self) -> core::result::Result<String, std::io::Error> {
            core::result::Result::Ok(format!("{}@{}", self.user, self.hosts.join(",")))
        }
        async fn is_open(&self, _raw: &String) -> bool {
            true
        }
    }

    /// A global provider with defaults only.
    #[derive(Connection, serde::Deserialize)]
    #[connection(crate = "::connscope")]
    pub struct Plain {}

    impl Provider for Plain {
        type Raw = ();
        type Error = std::io::Error;
        async fn connect(&self) -> core::result::Result<(), std::io::Error> {
            core::result::Result::Ok(())
        }
        async fn is_open(&self, _raw: &()) -> bool {
            true
        }
    }

    /// A generic provider: the form bounds follow the field types.
    #[derive(Connection, serde::Deserialize)]
    pub struct Tagged<T: Send + Sync + 'static> {
        /// A raw identifier becomes the field name `type`.
        #[connection(default = "plain")]
        pub r#type: String,
        /// A generic field.
        pub value: T,
    }

    impl<T: Send + Sync + 'static> Provider for Tagged<T> {
        type Raw = ();
        type Error = std::io::Error;
        async fn connect(&self) -> core::result::Result<(), std::io::Error> {
            core::result::Result::Ok(())
        }
        async fn is_open(&self, _raw: &()) -> bool {
            true
        }
    }

    /// A raw identifier as a function name (and so as its companion module's name).
    #[cached_resource]
    pub async fn r#match(n: u8) -> core::result::Result<u8, connscope::Error> {
        core::result::Result::Ok(n)
    }

    async fn release(_value: u64) {}

    /// A global cached function returning a plain value, with a release hook.
    #[cached_resource(ttl = "5m", max_entries = 100, on_release = release)]
    pub async fn plain(a: u32, b: &str, (c, d): (u8, u8)) -> u64 {
        u64::from(a) + b.len() as u64 + u64::from(c) + u64::from(d)
    }

    /// A session-scoped cached function taking a session connection (not part of the key).
    #[cached_resource(scope = "session")]
    pub async fn with_conn(
        _conn: &Conn<Shadowed>,
        region: String,
    ) -> core::result::Result<std::sync::Arc<String>, connscope::Error> {
        core::result::Result::Ok(std::sync::Arc::new(region))
    }

    /// A global cached function taking a global connection, with no key at all.
    #[cached_resource(scope = "global", crate = "::connscope")]
    pub async fn no_key(_conn: &Conn<Plain>) -> core::result::Result<u8, connscope::Error> {
        core::result::Result::Ok(1)
    }

    /// A private cached function: its controls are private too.
    #[cached_resource]
    async fn private(n: u8) -> u8 {
        n
    }

    /// Uses the private function and its controls.
    pub async fn use_private() -> u8 {
        let _ = private::invalidate(1).await;
        private(1).await
    }
}

#[tokio::test]
async fn shadowed_names_do_not_leak_into_generated_code() {
    let rt = connscope::Runtime::builder().build();
    let session = rt.session();
    let n = session
        .run(async {
            let a = shadowed::plain(1, "ab", (3, 4)).await;
            let b = shadowed::plain(1, "ab", (3, 4)).await;
            assert_eq!((a, b), (10, 10));
            assert_eq!(shadowed::plain::stats().hits, 1);
            assert!(shadowed::plain::invalidate(1, "ab", (3, 4)).await);
            assert_eq!(shadowed::use_private().await, 1);
            let report = shadowed::plain::clear().await;
            assert!(report.is_ok());
            assert_eq!(shadowed::r#match(3).await.unwrap(), 3);
            assert_eq!(shadowed::r#match::stats().loads, 1);
            let conn = connscope::Conn::new("plain", shadowed::Plain {});
            shadowed::no_key(&conn).await.unwrap()
        })
        .await;
    assert_eq!(n, 1);
    use connscope::Connection as _;
    assert_eq!(shadowed::Tagged::<u16>::FORM[0].name, "type");
    let tagged =
        shadowed::Tagged::<u16>::from_form(&connscope::FormValues::submitted([("value", "7")])).unwrap();
    assert_eq!((tagged.r#type.as_str(), tagged.value), ("plain", 7));
    assert_eq!(shadowed::no_key::resource().name(), "hygiene::shadowed::no_key");
    let _ = rt.shutdown().await;
}

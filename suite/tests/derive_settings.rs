//! `#[derive(Connection)]` on settings structs shaped like real providers: runtime-state fields
//! (`#[connection(skip)]`, `#[serde(skip)]`), fields read with their own serde attributes
//! (`rename`, `default`, `with`, `deserialize_with`), and a provider generic over a backend.
//! The config loader (serde) and the login form must read every field the same way.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use connscope::{Connection, FieldKind, FieldProblem, FormField, FormValues, Provider, Secret};

/// Settings helpers, as a provider crate would have them.
mod settings {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, de::Error as _};

    pub fn pool_size() -> u32 {
        4
    }

    /// A duration written `"5s"`, `"10m"`, `"250ms"`.
    pub mod duration {
        use super::*;

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
            let text = String::deserialize(d)?;
            humantime::parse_duration(&text).map_err(|e| D::Error::custom(format!("`{text}`: {e}")))
        }
    }

    /// A region code, upper-cased.
    pub fn region<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        Ok(String::deserialize(d)?.to_uppercase())
    }
}

/// Per-instance state a provider keeps next to its settings.
struct Instance(u64);

impl Default for Instance {
    fn default() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Instance(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// A backend marker, as a SQL provider is generic over its database.
trait Backend: Send + Sync + 'static {
    const KIND: &'static str;
}
struct Pg;
impl Backend for Pg {
    const KIND: &'static str = "postgres";
}

#[derive(Connection, serde::Deserialize)]
#[connection(scope = "session", name = "pool")]
#[serde(bound = "")]
struct Pool<DB: Backend> {
    #[connection(fixed)]
    url: String,
    user: String,
    #[connection(secret)]
    password: Secret,
    /// In the form, read by the same function serde uses.
    #[serde(deserialize_with = "settings::region")]
    region: String,
    /// Named differently in config and the form.
    #[serde(rename = "schema")]
    search_path: Option<String>,
    #[connection(fixed)]
    #[serde(default = "settings::pool_size")]
    max_connections: u32,
    #[connection(fixed)]
    #[serde(default)]
    min_connections: u32,
    #[connection(fixed)]
    #[serde(with = "settings::duration")]
    connect_timeout: Duration,
    #[connection(fixed, default = "90s")]
    #[serde(with = "settings::duration")]
    idle_timeout: Duration,
    #[serde(skip)]
    instance: Instance,
    /// Skipped, but serde fills it from its `default` path: so does the form.
    #[serde(skip, default = "settings::pool_size")]
    spare: u32,
    #[connection(skip)]
    #[serde(skip)]
    _db: PhantomData<fn() -> DB>,
}

impl<DB: Backend> Provider for Pool<DB> {
    type Raw = String;
    type Error = std::io::Error;
    async fn connect(&self) -> Result<String, std::io::Error> {
        Ok(format!("{}://{}@{}", DB::KIND, self.user, self.url))
    }
    async fn is_open(&self, _raw: &String) -> bool {
        true
    }
}

fn login(pairs: &[(&str, &str)]) -> FormValues {
    FormValues::submitted(pairs.iter().copied()).fix("url", "db.internal/sales").fix("connect_timeout", "3s")
}

#[test]
fn form_lists_only_what_a_user_types() {
    let field = |name, label, kind, required| FormField { name, label, kind, default: None, required };
    assert_eq!(
        Pool::<Pg>::FORM,
        &[
            field("user", "User", FieldKind::Text, true),
            field("password", "Password", FieldKind::Password, true),
            field("region", "Region", FieldKind::Text, true),
            field("schema", "Search path", FieldKind::Text, false),
        ]
    );
}

#[test]
fn fields_are_read_with_their_serde_attributes() {
    let values = login(&[("user", "ada"), ("password", "pw"), ("region", "emea"), ("schema", "s1")]);
    let p = Pool::<Pg>::from_form(&values).unwrap();
    assert_eq!((p.url.as_str(), p.user.as_str(), p.password.expose()), ("db.internal/sales", "ada", "pw"));
    assert_eq!(p.region, "EMEA", "deserialize_with applies to a form field");
    assert_eq!(p.search_path.as_deref(), Some("s1"), "rename names the form field");
    assert_eq!((p.max_connections, p.min_connections), (4, 0), "serde defaults apply");
    assert_eq!(p.connect_timeout, Duration::from_secs(3), "`with` reads \"3s\"");
    assert_eq!(p.idle_timeout, Duration::from_secs(90), "the connection default goes through `with`");

    // Fixed values from config override the defaults, read the same way.
    let values = login(&[("user", "ada"), ("password", "pw"), ("region", "emea")])
        .fix("max_connections", 9)
        .fix("idle_timeout", "250ms");
    let p = Pool::<Pg>::from_form(&values).unwrap();
    assert_eq!((p.max_connections, p.idle_timeout), (9, Duration::from_millis(250)));
    assert_eq!(p.search_path, None);
}

#[test]
fn the_form_and_the_config_loader_agree() {
    let config = r#"
        url = "db.internal/sales"
        user = "ada"
        password = "pw"
        region = "emea"
        schema = "s1"
        connect_timeout = "3s"
        idle_timeout = "90s"
    "#;
    let loaded: Pool<Pg> = toml::from_str(config).unwrap();
    let values = login(&[("user", "ada"), ("password", "pw"), ("region", "emea"), ("schema", "s1")]);
    let formed = Pool::<Pg>::from_form(&values).unwrap();
    let view = |p: &Pool<Pg>| {
        (
            p.url.clone(),
            p.region.clone(),
            p.search_path.clone(),
            p.max_connections,
            p.min_connections,
            p.connect_timeout,
            p.idle_timeout,
            p.spare,
        )
    };
    assert_eq!(view(&loaded), view(&formed));
}

#[test]
fn skipped_fields_are_fresh_runtime_state() {
    let values = login(&[("user", "ada"), ("password", "pw"), ("region", "emea"), ("instance", "7")]);
    let a = Pool::<Pg>::from_form(&values).unwrap();
    let b = Pool::<Pg>::from_form(&values).unwrap();
    assert_ne!(a.instance.0, b.instance.0, "each instance gets its own Default");
    assert_eq!(a.spare, 4, "a skipped field's serde default applies");
    assert!(
        !Pool::<Pg>::FORM.iter().any(|f| f.name == "instance" || f.name == "_db"),
        "state is not in the form"
    );
}

#[test]
fn problems_are_named_as_the_user_wrote_them() {
    let values = FormValues::submitted([("user", "ada"), ("password", "pw")])
        .fix("connect_timeout", "soon")
        .fix("max_connections", "many");
    let err = Pool::<Pg>::from_form(&values).err().unwrap();
    let problems: Vec<_> = err.fields().iter().map(|f| (f.name, f.problem.clone())).collect();
    assert_eq!(problems.len(), 4, "{problems:?}");
    assert_eq!(problems[0], ("url", FieldProblem::MissingFixed));
    assert_eq!(problems[1], ("region", FieldProblem::Missing));
    assert!(
        matches!(&problems[2], ("max_connections", FieldProblem::Invalid(why)) if why.contains("string"))
    );
    assert!(
        matches!(&problems[3], ("connect_timeout", FieldProblem::Invalid(why)) if why.contains("`soon`")),
        "{problems:?}"
    );
}

#[tokio::test]
async fn a_generic_provider_logs_in() {
    let rt = connscope::Runtime::builder()
        .env_vars(Vec::<(String, String)>::new())
        .secrets_file("/nonexistent/secrets.toml")
        .build();
    let s = rt.session();
    let values = login(&[("user", "ada"), ("password", "pw"), ("region", "emea")]);
    let conn = s.login("pool", Pool::<Pg>::from_form(&values).unwrap()).await.unwrap();
    assert_eq!(*conn.get().await.unwrap(), "postgres://ada@db.internal/sales");
    assert!(conn.provider().password.is_empty(), "the password is wiped after connecting");
    assert!(s.end().await.is_ok());
    assert!(rt.shutdown().await.is_ok());
}

/// serde's struct-level `rename_all` and `default` apply to the form and fixed values too.
#[derive(Connection, serde::Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct Camel {
    host_name: String,
    #[connection(fixed)]
    pool_size: u32,
    #[connection(fixed)]
    #[serde(rename = "retries")]
    retry_count: u8,
}

impl Default for Camel {
    fn default() -> Self {
        Camel { host_name: "localhost".into(), pool_size: 8, retry_count: 2 }
    }
}

impl Provider for Camel {
    type Raw = String;
    type Error = std::io::Error;
    async fn connect(&self) -> Result<String, std::io::Error> {
        Ok(self.host_name.clone())
    }
    async fn is_open(&self, _raw: &String) -> bool {
        true
    }
}

#[test]
fn struct_level_serde_attributes_apply_to_every_field() {
    assert_eq!(
        Camel::FORM,
        &[FormField {
            name: "hostName",
            label: "Host name",
            kind: FieldKind::Text,
            default: None,
            required: false
        }]
    );
    let c = Camel::from_form(&FormValues::new().fix("poolSize", 3)).unwrap();
    assert_eq!((c.host_name.as_str(), c.pool_size, c.retry_count), ("localhost", 3, 2));
    let c = Camel::from_form(&FormValues::submitted([("hostName", "db")]).fix("retries", 5)).unwrap();
    assert_eq!((c.host_name.as_str(), c.pool_size, c.retry_count), ("db", 8, 5));
    let loaded: Camel = toml::from_str("hostName = 'db'\nretries = 5").unwrap();
    assert_eq!((loaded.host_name.as_str(), loaded.pool_size, loaded.retry_count), ("db", 8, 5));
}

/// A secret read by the app's own function, which may quote what it was given.
#[derive(Connection, serde::Deserialize)]
struct Token {
    #[connection(secret)]
    #[serde(deserialize_with = "token")]
    token: String,
    #[connection(fixed)]
    backup: Option<Secret>,
}

fn token<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    use serde::{Deserialize, de::Error};
    let t = String::deserialize(d)?;
    match t.starts_with("tk-") {
        true => Ok(t),
        false => Err(D::Error::custom(format!("`{t}` does not start with tk-"))),
    }
}

impl Provider for Token {
    type Raw = ();
    type Error = std::io::Error;
    async fn connect(&self) -> Result<(), std::io::Error> {
        Ok(())
    }
    async fn is_open(&self, _raw: &()) -> bool {
        true
    }
}

#[test]
fn a_rejected_secret_is_never_quoted() {
    let values = FormValues::submitted([("token", "hunter2")]).fix("backup", 12345);
    let err = Token::from_form(&values).err().unwrap();
    let text = format!("{err} {err:?}");
    assert!(!text.contains("hunter2") && !text.contains("12345"), "{text}");
    assert_eq!(err.fields().len(), 2, "{text}");
    assert!(text.contains("`token` (Token) is not valid"), "{text}");
    let ok = Token::from_form(&FormValues::submitted([("token", "tk-1")])).unwrap();
    assert_eq!((ok.token.as_str(), ok.backup.is_none()), ("tk-1", true));
}

/// A provider declared by a `macro_rules!` macro, as the SQL providers are: field types arrive
/// as `$ty` fragments (an invisible group around the type).
macro_rules! declare_provider {
    ($name:ident, $secret:ty) => {
        #[derive(Connection, serde::Deserialize)]
        struct $name {
            #[connection(fixed)]
            key: $secret,
            #[connection(fixed)]
            #[serde(default)]
            spare_key: Option<$secret>,
            user: String,
        }

        impl Provider for $name {
            type Raw = ();
            type Error = std::io::Error;
            async fn connect(&self) -> Result<(), std::io::Error> {
                Ok(())
            }
            async fn is_open(&self, _raw: &()) -> bool {
                true
            }
        }
    };
}

declare_provider!(Declared, Secret);

#[test]
fn a_secret_type_given_through_a_macro_is_still_a_secret() {
    let values = FormValues::submitted([("user", "ada")]).fix("key", "hunter2").fix("spare_key", "hunter3");
    let mut p = Declared::from_form(&values).unwrap();
    assert_eq!((p.key.expose(), p.user.as_str()), ("hunter2", "ada"));
    p.forget_secrets();
    assert!(p.key.is_empty(), "a `Secret` field is wiped after login, however its type was written");
    assert!(p.spare_key.as_ref().is_some_and(Secret::is_empty));
}

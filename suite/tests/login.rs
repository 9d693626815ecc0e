//! Per-user login on a session: connect now, wipe the credentials, gate on the login, log out.

mod support;

use std::sync::atomic::Ordering::SeqCst;

use connscope::{Connection, Error, HealthCheck, Provider, Secret, SessionScope};
use support::{Client, Refused, probe};

/// Accepts exactly the password "right".
#[derive(Debug)]
struct UserLogin {
    label: String,
    user: String,
    password: Secret,
}

impl Provider for UserLogin {
    type Raw = Client;
    type Error = Refused;
    async fn connect(&self) -> Result<Client, Refused> {
        if self.password.expose() != "right" {
            return Err(Refused);
        }
        probe(&self.label).connects.fetch_add(1, SeqCst);
        Ok(Client { serial: self.user.len() as u64 })
    }
    async fn is_open(&self, _raw: &Client) -> bool {
        probe(&self.label).open.load(SeqCst)
    }
    async fn close(&self, _raw: &Client) {
        probe(&self.label).closes.fetch_add(1, SeqCst);
    }
}

impl Connection for UserLogin {
    type Scope = SessionScope;
    const NAME: &'static str = "login";
    const HEALTH_CHECK: HealthCheck = HealthCheck::EveryUse;
    fn forget_secrets(&mut self) {
        self.password.forget();
    }
}

fn settings(label: &str, password: &str) -> UserLogin {
    UserLogin { label: label.into(), user: "ada".into(), password: Secret::new(password) }
}

#[tokio::test]
async fn a_failed_login_stores_nothing_and_says_why() {
    let rt = support::runtime().build();
    let s = rt.session();
    let err = s.login("db", settings("login-fail", "wrong")).await.unwrap_err();
    assert_eq!(err.to_string(), "could not connect `db`: connection refused by the test probe");
    let err = s.logged_in::<UserLogin>("db").await.unwrap_err();
    assert!(matches!(err, Error::LoginRequired { reason: "not logged in", .. }), "{err}");
}

#[tokio::test]
async fn login_keeps_the_connection_and_forgets_the_password() {
    let rt = support::runtime().build();
    let (alice, bob) = (rt.session(), rt.session());
    let conn = alice.login("db", settings("login-ok", "right")).await.unwrap();
    assert!(conn.provider().password.is_empty(), "credentials wiped after connecting");
    assert!(!format!("{:?}", conn.provider()).contains("right"));
    let again = alice.logged_in::<UserLogin>("db").await.unwrap();
    assert_eq!(again.get().await.unwrap().serial, 3);
    assert!(bob.logged_in::<UserLogin>("db").await.is_err(), "another session is not logged in");
    assert_eq!(probe("login-ok").connects(), 1);
}

#[tokio::test]
async fn a_login_found_closed_goes_back_to_the_login_form() {
    let rt = support::runtime().build();
    let s = rt.session();
    s.login("db", settings("login-closed", "right")).await.unwrap();
    probe("login-closed").set_open(false);
    let err = s.logged_in::<UserLogin>("db").await.unwrap_err();
    assert!(matches!(err, Error::LoginRequired { .. }), "{err}");
    assert_eq!(probe("login-closed").closes(), 1, "closed and removed");
    assert_eq!(probe("login-closed").connects(), 1, "never reconnected: the password is gone");
    let err = s.logged_in::<UserLogin>("db").await.unwrap_err();
    assert!(matches!(err, Error::LoginRequired { reason: "not logged in", .. }));
}

#[tokio::test]
async fn logout_and_session_end_close_the_connection_once() {
    let rt = support::runtime().build();
    let s = rt.session();
    s.login("db", settings("login-out", "right")).await.unwrap();
    assert!(s.logout::<UserLogin>("db").await);
    assert!(!s.logout::<UserLogin>("db").await);
    assert_eq!(probe("login-out").closes(), 1);

    s.login("db", settings("login-out", "right")).await.unwrap();
    let report = s.end().await;
    assert_eq!(report.released, 1);
    assert_eq!(probe("login-out").closes(), 2);
    assert!(matches!(s.logged_in::<UserLogin>("db").await, Err(Error::SessionEnded { .. })));
}

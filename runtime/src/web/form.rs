//! The login flow: a page rendered from a provider's derived form description, a submit
//! handler that checks the CSRF token and the throttle, builds the settings and logs the browser
//! in (creating its session), a logout handler, and the [`LoggedIn`] extractor that gates pages.

use std::marker::PhantomData;

use axum::Router;
use axum::extract::{Form, FromRequestParts, RawQuery};
use axum::http::header::RETRY_AFTER;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};

use super::page::{LOG_IN_HERE, LOGGED_OUT, LoginField, LoginPage};
use super::sessions::WebSession;
use super::throttle::ClientKey;
use crate::conn::Conn;
use crate::form::FormValues;
use crate::provider::{Connection, FieldKind};

/// Extracts the logged-in connection of provider `P` (named `P::NAME`, or as set with
/// [`WebSessions::connection_name`](super::WebSessions::connection_name)), or redirects to the
/// login page when the browser has no session, the session has no login, or it was found closed.
pub struct LoggedIn<P: Connection>(pub Conn<P>);

impl<P, S> FromRequestParts<S> for LoggedIn<P>
where
    P: Connection,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let web = WebSession::from_request_parts(parts, state).await?;
        let login_page = || Redirect::to(&web.web().config().login_path).into_response();
        let Some(session) = web.session() else { return Err(login_page()) };
        let name = web.web().config().name_of::<P>();
        match session.logged_in::<P>(name).await {
            Ok(conn) => Ok(LoggedIn(conn)),
            // Logged in on another instance: a login connection does not cross processes.
            Err(_) if web.logged_in_elsewhere(name) => {
                let login = &web.web().config().login_path;
                let separator = if login.contains('?') { '&' } else { '?' };
                Err(Redirect::to(&format!("{login}{separator}{LOGIN_HERE_QUERY}")).into_response())
            }
            Err(_) => Err(login_page()),
        }
    }
}

/// `GET` and `POST` on `/login` and `POST` on `/logout`, for provider `P`: the default paths.
/// With paths of your own ([`WebSessions::login_path`](super::WebSessions::login_path),
/// [`logout_path`](super::WebSessions::logout_path)), use
/// [`WebSessions::login_routes`](super::WebSessions::login_routes), which mounts them where
/// they are configured.
pub fn login_routes<P: Connection>() -> Router {
    routes_at::<P>("/login", "/logout")
}

pub(crate) fn routes_at<P: Connection>(login: &str, logout: &str) -> Router {
    Router::new()
        .route(login, get(login_form::<P>).post(login_submit::<P>))
        .route(logout, post(self::logout::<P>))
}

/// The query [`LoggedIn`] adds to the login page's path for a browser logged in on another
/// instance only.
const LOGIN_HERE_QUERY: &str = "login_here";

/// Renders the login form of provider `P` (secret fields are password inputs) with the
/// configured template; after a logout (the query `?logged_out`) it says [`LOGGED_OUT`], and to
/// a browser whose login was made on another instance (`?login_here`), [`LOG_IN_HERE`].
pub async fn login_form<P: Connection>(web: WebSession, RawQuery(query): RawQuery) -> Html<String> {
    let has = |flag: &str| query.as_deref().is_some_and(|q| q.split('&').any(|kv| kv == flag));
    let notice = if has("logged_out") {
        Some(LOGGED_OUT)
    } else if has(LOGIN_HERE_QUERY) {
        Some(LOG_IN_HERE)
    } else {
        None
    };
    Html(render::<P>(&web, None, notice, &FormValues::new()))
}

/// What a visitor is told when a login fails, whatever the cause: a wrong password, an unknown
/// user or a server that cannot be reached read the same, and name no server, database or user
/// (the cause is logged with `tracing`).
pub const LOGIN_FAILED: &str = "could not log in: wrong user name or password, or the server is unavailable";

/// Accepts the login form: checks the CSRF token, builds `P` from the fields, checks the
/// [`LoginThrottle`](super::LoginThrottle), connects. On success the browser gets a session (a
/// new one unless it had one) under a new cookie id, and is sent home; on failure the form is
/// shown again with [`LOGIN_FAILED`] (never with the secrets that were typed).
pub async fn login_submit<P: Connection>(
    web: WebSession,
    ClientKey(client): ClientKey,
    Form(fields): Form<Vec<(String, String)>>,
) -> Response {
    let token = fields.iter().find(|(k, _)| k == "_csrf").map(|(_, v)| v.as_str()).unwrap_or("");
    if !web.check_csrf(token) {
        return (StatusCode::FORBIDDEN, "the form expired or came from another site: reload the login page")
            .into_response();
    }
    // Fields the app fixes (a server URL…) come from `[connections.<name>]`, never from the form.
    let name = web.web().config().name_of::<P>().to_owned();
    let fixed = web.runtime().shared.config.section(&name).unwrap_or_default();
    let values = FormValues::submitted(fields.into_iter().filter(|(k, _)| k != "_csrf")).fix_all(fixed);
    let settings = match P::from_form(&values) {
        Ok(settings) => settings,
        Err(e) => {
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                Html(render::<P>(&web, Some(&e.to_string()), None, &values)),
            )
                .into_response();
        }
    };
    let attempt = match web.web().throttle().begin(account_key::<P>(&name, &values), client.clone()) {
        Ok(attempt) => attempt,
        Err(wait) => {
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            tracing::warn!(connection = %name, client = ?client, retry_after_s = secs, "connscope: login refused: too many failures");
            let message = format!(
                "too many failed logins: try again in {}",
                humantime::format_duration(std::time::Duration::from_secs(secs))
            );
            let mut response =
                (StatusCode::TOO_MANY_REQUESTS, Html(render::<P>(&web, Some(&message), None, &values)))
                    .into_response();
            response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(secs));
            return response;
        }
    };
    match web.log_in(&name, settings).await {
        Ok(()) => {
            attempt.succeeded();
            Redirect::to(&web.web().config().home_path).into_response()
        }
        Err(e) => {
            drop(attempt); // a failure
            tracing::warn!(connection = %name, client = ?client, error = %e, "connscope: login failed");
            (StatusCode::UNAUTHORIZED, Html(render::<P>(&web, Some(LOGIN_FAILED), None, &values)))
                .into_response()
        }
    }
}

/// The throttling key of an account: the connection name and the non-secret fields (the user
/// name…), without case.
fn account_key<P: Connection>(name: &str, values: &FormValues) -> String {
    let mut key = name.to_owned();
    for field in P::FORM.iter().filter(|f| f.kind == FieldKind::Text) {
        key.push('\u{1f}');
        key.push_str(&values.get(field.name).unwrap_or("").trim().to_lowercase());
    }
    key
}

/// Logs out: ends the session (closing its connections), deletes the cookie, rotates the CSRF
/// token, and sends the browser to the login page, which then says [`LOGGED_OUT`].
pub async fn logout<P: Connection>(web: WebSession, Form(fields): Form<Vec<(String, String)>>) -> Response {
    let token = fields.iter().find(|(k, _)| k == "_csrf").map(|(_, v)| v.as_str()).unwrap_or("");
    if !web.check_csrf(token) {
        return (StatusCode::FORBIDDEN, "the form expired or came from another site").into_response();
    }
    let report = web.end().await;
    if !report.is_ok() {
        tracing::warn!(failures = report.failures.len(), "connscope: logout: release hooks failed");
    }
    let _ = PhantomData::<P>;
    let login = &web.web().config().login_path;
    let separator = if login.contains('?') { '&' } else { '?' };
    Redirect::to(&format!("{login}{separator}logged_out")).into_response()
}

/// A logout button for a page of this session: a POST form to the configured
/// [logout path](super::WebSessions::logout_path), carrying the CSRF token.
pub fn logout_button(web: &WebSession) -> String {
    format!(
        r#"<form method="post" action="{}" class="logout"><input type="hidden" name="_csrf" value="{}"><button type="submit">Log out</button></form>"#,
        escape_html(&web.web().config().logout_path),
        escape_html(&web.csrf_token())
    )
}

fn render<P: Connection>(
    web: &WebSession,
    error: Option<&str>,
    notice: Option<&str>,
    previous: &FormValues,
) -> String {
    let config = web.web().config();
    let token = web.csrf_token();
    let fields = P::FORM
        .iter()
        .map(|field| LoginField {
            field,
            // Text fields keep what the user typed; password fields never echo anything back.
            value: match field.kind {
                FieldKind::Text => previous.get(field.name).or(field.default).unwrap_or(""),
                FieldKind::Password => "",
            },
        })
        .collect();
    let page = LoginPage {
        title: &config.title,
        action: &config.login_path,
        fields,
        error,
        notice,
        csrf_token: &token,
    };
    config.template.0.render(&page)
}

/// Escapes text for HTML content and attribute values (`&`, `<`, `>`, `"`, `'`).
///
/// ```
/// assert_eq!(connscope::web::escape_html("<b a='1'>"), "&lt;b a=&#39;1&#39;&gt;");
/// ```
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

//! A real browser for the dashboard's tests: Debian's `chromium`, headless, driven
//! over W3C WebDriver by `chromedriver` (package `chromium-driver`, which
//! `.ci/deps test` installs where apt works).
//!
//! [`find`] says whether both are installed; a test without them prints a `SKIPPED:`
//! line and passes. [`Browser::start`] runs chromedriver on a free port with its log
//! in a temp file (printed when starting fails) and opens a session; dropping the
//! [`Browser`] kills chromedriver, which ends its chromium. Chromium runs with
//! `--no-sandbox`, which it needs as root (CI runs as root).
//!
//! The WebDriver calls are the handful the tests need (navigate, run a script, find,
//! click, type, screenshot), JSON over this crate's own HTTP client, rather than a
//! WebDriver crate: fantoccini was tried, and its dependency tree changes the
//! features of crates that RocksDB's build script uses, which made every target dir
//! compile RocksDB's C++ again (about 30 minutes on 2 cores) for one test.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use base64::Engine as _;
use http::Method;
use serde_json::{Value, json};

use crate::harness::free_port;
use crate::http::{HttpClient, empty, full};

/// The key of an element reference in WebDriver's JSON (W3C WebDriver, "Elements").
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// How long chromedriver has to answer `/status`, and chromium to open a session.
const DRIVER_READY_TIMEOUT: Duration = Duration::from_secs(20);

/// The chromedriver and chromium binaries.
#[derive(Debug, Clone)]
pub struct Tools {
    pub driver: PathBuf,
    pub chromium: PathBuf,
}

/// chromedriver and a chromium on `$PATH`, if both are installed.
pub fn find() -> Option<Tools> {
    let on_path = |name: &str| {
        std::env::split_paths(&std::env::var_os("PATH")?)
            .map(|dir| dir.join(name))
            .find(|path| path.is_file())
    };
    let driver = on_path("chromedriver")?;
    let chromium = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find_map(on_path)?;
    Some(Tools { driver, chromium })
}

/// A chromedriver process and one WebDriver session of a headless chromium.
#[derive(Debug)]
pub struct Browser {
    http: HttpClient,
    /// `http://127.0.0.1:PORT/session/ID`.
    session: String,
    driver: Child,
    _log_dir: tempfile::TempDir,
}

/// An element of the page, as WebDriver names it.
#[derive(Debug, Clone)]
pub struct Element(String);

impl Browser {
    /// Starts chromedriver and opens a session with a `width` x `height` window.
    pub async fn start(tools: &Tools, width: u32, height: u32) -> anyhow::Result<Self> {
        let log_dir = tempfile::Builder::new()
            .prefix("ringkv-chromedriver-")
            .tempdir()?;
        let log_path = log_dir.path().join("chromedriver.log");
        let port = free_port(false)?;
        let driver = Command::new(&tools.driver)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log_path.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", tools.driver.display()))?;
        let mut browser = BrowserStart {
            driver: Some(driver),
            log_path: &log_path,
        };
        let url = format!("http://127.0.0.1:{port}");
        browser.wait_ready(&url).await?;
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("browserName".into(), json!("chrome"));
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": tools.chromium,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    "--hide-scrollbars",
                    format!("--window-size={width},{height}"),
                ],
            }),
        );
        // Starting chromium can take a while on a loaded machine.
        let http = HttpClient::with_timeout(Duration::from_secs(60));
        let new_session = json!({ "capabilities": { "alwaysMatch": capabilities } });
        let opened = call(
            &http,
            Method::POST,
            &format!("{url}/session"),
            Some(new_session),
        )
        .await
        .map_err(|e| browser.fail(e.context("opening a chromium session")))?;
        let id = opened["sessionId"]
            .as_str()
            .ok_or_else(|| browser.fail(anyhow!("no session id in {opened}")))?
            .to_owned();
        Ok(Self {
            http,
            session: format!("{url}/session/{id}"),
            driver: browser.driver.take().expect("the driver is still ours"),
            _log_dir: log_dir,
        })
    }

    /// Ends the session (chromium quits), then chromedriver.
    pub async fn close(mut self) {
        let _ = call(&self.http, Method::DELETE, &self.session, None).await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }

    async fn command(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        call(&self.http, method, &format!("{}{path}", self.session), body).await
    }

    /// Opens `url` and waits for its load event.
    pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.command(Method::POST, "/url", Some(json!({ "url": url })))
            .await
            .map(drop)
    }

    /// Runs `script` (a function body; `return` gives the value) in the page.
    pub async fn eval(&self, script: &str) -> anyhow::Result<Value> {
        self.command(
            Method::POST,
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
        .await
        .with_context(|| format!("running in the page: {script}"))
    }

    /// The first element matching a CSS selector.
    pub async fn find(&self, css: &str) -> anyhow::Result<Element> {
        let found = self
            .command(
                Method::POST,
                "/element",
                Some(json!({ "using": "css selector", "value": css })),
            )
            .await
            .with_context(|| format!("finding {css}"))?;
        found[ELEMENT_KEY]
            .as_str()
            .map(|id| Element(id.to_owned()))
            .ok_or_else(|| anyhow!("finding {css}: no element reference in {found}"))
    }

    /// Clicks the element as a user would (scrolled into view, at its centre).
    pub async fn click(&self, element: &Element) -> anyhow::Result<()> {
        let path = format!("/element/{}/click", element.0);
        self.command(Method::POST, &path, Some(json!({})))
            .await
            .map(drop)
    }

    /// Empties an input, then types `text` into it key by key.
    pub async fn type_into(&self, element: &Element, text: &str) -> anyhow::Result<()> {
        let clear = format!("/element/{}/clear", element.0);
        self.command(Method::POST, &clear, Some(json!({}))).await?;
        if !text.is_empty() {
            let keys = format!("/element/{}/value", element.0);
            self.command(Method::POST, &keys, Some(json!({ "text": text })))
                .await?;
        }
        Ok(())
    }

    /// A PNG of the window.
    pub async fn screenshot(&self) -> anyhow::Result<Vec<u8>> {
        let png = self.command(Method::GET, "/screenshot", None).await?;
        let png = png
            .as_str()
            .ok_or_else(|| anyhow!("no screenshot in {png}"))?;
        Ok(base64::engine::general_purpose::STANDARD.decode(png)?)
    }

    /// Evaluates `script` every 100 ms until `done` accepts its value; fails after
    /// `timeout` with the last value.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        script: &str,
        done: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let value = self.eval(script).await?;
            if done(&value) {
                return Ok(value);
            }
            if Instant::now() >= deadline {
                bail!("{what}: not seen within {timeout:?}; the page last gave {value}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// One WebDriver command: its `value`, or the driver's error (`error`, `message`).
async fn call(
    http: &HttpClient,
    method: Method,
    url: &str,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    let (headers, body) = match body {
        Some(json) => (
            vec![("content-type", "application/json")],
            full(serde_json::to_vec(&json)?),
        ),
        None => (Vec::new(), empty()),
    };
    let resp = http.request(method.clone(), url, &headers, body).await?;
    let answer: Value = serde_json::from_slice(&resp.body)
        .with_context(|| format!("{method} {url}: answer is not JSON: {resp}"))?;
    let value = answer.get("value").cloned().unwrap_or(Value::Null);
    if resp.status != 200 {
        bail!(
            "{method} {url}: WebDriver {} {}: {}",
            resp.status,
            value["error"].as_str().unwrap_or("?"),
            value["message"].as_str().unwrap_or("")
        );
    }
    Ok(value)
}

/// chromedriver while it starts: killed, with its log in the error, if it fails.
struct BrowserStart<'a> {
    driver: Option<Child>,
    log_path: &'a Path,
}

impl BrowserStart<'_> {
    async fn wait_ready(&mut self, url: &str) -> anyhow::Result<()> {
        let probe = HttpClient::with_timeout(Duration::from_secs(1));
        let deadline = Instant::now() + DRIVER_READY_TIMEOUT;
        loop {
            if let Ok(resp) = probe.get(&format!("{url}/status")).await
                && resp.status == 200
            {
                return Ok(());
            }
            if let Some(Ok(Some(status))) = self.driver.as_mut().map(Child::try_wait) {
                return Err(self.fail(anyhow::anyhow!("chromedriver exited with {status}")));
            }
            if Instant::now() >= deadline {
                return Err(self.fail(anyhow::anyhow!(
                    "chromedriver did not answer within {DRIVER_READY_TIMEOUT:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn fail(&mut self, e: anyhow::Error) -> anyhow::Error {
        if let Some(mut driver) = self.driver.take() {
            let _ = driver.kill();
            let _ = driver.wait();
        }
        let log = std::fs::read_to_string(self.log_path).unwrap_or_default();
        let tail: String = log
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        e.context(format!("chromedriver log ends with:\n{tail}"))
    }
}

impl Drop for BrowserStart<'_> {
    fn drop(&mut self) {
        if let Some(mut driver) = self.driver.take() {
            let _ = driver.kill();
            let _ = driver.wait();
        }
    }
}

/// Where a test's screenshot goes: `$RINGKV_SCREENSHOT_DIR`, else
/// `<target>/ringkv-artifacts/` beside the test executable's profile directory
/// (outside the clone, where CI keeps its build).
pub fn screenshot_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("RINGKV_SCREENSHOT_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("the test executable's path");
    // <target>/release/deps/x -> <target>
    exe.ancestors()
        .nth(3)
        .map(|target| target.join("ringkv-artifacts"))
        .unwrap_or_else(std::env::temp_dir)
}

"""Drive the operator's console in headless Chromium (Selenium) and report what it showed.

Run by tests/e2e/console.rs, which starts the gateway, sends the traffic and asserts on the
report: `python3 console.py INPUT.json OUTPUT.json`. INPUT holds the admin URL, the token, the
requests to paste and where to write the screenshots; OUTPUT gets the texts of each view, the
browser's console messages and what the tab stored. Nothing is asserted here but that each step
appeared: the assertions, against the admin API's own answers, are in Rust.
"""

import json
import os
import shutil
import sys

from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

WAIT_SECONDS = 20


def program(name):
    path = shutil.which(name)
    if path is None:
        sys.exit(f"{name} is not installed (`cargo xtask setup` installs chromium and chromium-driver)")
    return path


def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = program("chromium")
    for arg in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,800", "--hide-scrollbars", "--force-device-scale-factor=1",
                "--no-first-run", "--disable-extensions", "--disable-background-networking"]:
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(program("chromedriver")), options=options)
    # The page itself 1280x800, whatever the headless window's frame takes.
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": False})
    return driver


def main():
    with open(sys.argv[1]) as f:
        args = json.load(f)
    os.makedirs(args["screenshots"], exist_ok=True)
    driver = browser()
    report = {}
    try:
        run(driver, args, report)
    except TimeoutException as e:
        report["failed"] = f"timed out at step {report.get('step')}: {e.msg}"
        report["page"] = driver.find_element(By.TAG_NAME, "body").get_attribute("textContent")
    finally:
        report.setdefault("console", []).extend(severe(driver))
        driver.quit()
    with open(sys.argv[2], "w") as f:
        json.dump(report, f)


def severe(driver):
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def text(driver, selector):
    """The text of the first element `selector` finds, read in one step (the live views are
    rebuilt every few seconds)."""
    return driver.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.textContent : null", selector)


def fill(driver, selector, value):
    field = driver.find_element(By.CSS_SELECTOR, selector)
    field.clear()
    field.send_keys(value)


def shoot(driver, args, view):
    driver.execute_script("window.scrollTo(0, 0)")
    driver.save_screenshot(os.path.join(args["screenshots"], f"console-{view}.png"))


def open_view(driver, wait, report, view, ready):
    """Click the view's link and wait until `ready` (a CSS selector inside it) is shown."""
    report["step"] = view
    driver.find_element(By.CSS_SELECTOR, f'#nav a[data-view="{view}"]').click()
    wait.until(EC.visibility_of_element_located((By.CSS_SELECTOR, f"#view-{view} {ready}")))


def run(driver, args, report):
    wait = WebDriverWait(driver, WAIT_SECONDS)
    admin, token = args["admin"], args["token"]

    # Without the token: the login form, and the API's refusal of a wrong one.
    report["step"] = "login"
    driver.get(admin + "/admin/ui")
    wait.until(EC.visibility_of_element_located((By.ID, "login")))
    fill(driver, "#token", "not-the-token")
    driver.find_element(By.CSS_SELECTOR, "#login-form button").click()
    wait.until(EC.visibility_of_element_located((By.ID, "auth-error")))
    report["auth_error"] = text(driver, "#auth-error")
    report["nav_shown_without_token"] = driver.find_element(By.ID, "nav").is_displayed()
    report["auth_console"] = severe(driver)

    # With it.
    report["step"] = "overview"
    fill(driver, "#token", token)
    driver.find_element(By.CSS_SELECTOR, "#login-form button").click()
    wait.until(EC.visibility_of_element_located((By.CSS_SELECTOR, "#view-overview #history")))
    report["overview"] = text(driver, "#view-overview")
    report["history"] = driver.execute_script(
        "return [...document.querySelectorAll('#history tbody tr')].map(r => r.textContent)")
    shoot(driver, args, "overview")

    open_view(driver, wait, report, "backends", ".backend")
    report["backends"] = driver.execute_script("""
        const shown = {};
        for (const panel of document.querySelectorAll('#view-backends .backend')) {
            shown[panel.dataset.backend] = {
                calls: panel.querySelector('.calls .value').textContent,
                errors: panel.querySelector('.errors .value').textContent,
                text: panel.textContent,
                lines: panel.querySelectorAll('svg.chart polyline').length,
            };
        }
        return shown;""")
    shoot(driver, args, "backends")

    open_view(driver, wait, report, "routes", "#route-form")
    report["route_table"] = text(driver, "#route-table")
    fill(driver, "#route-request", args["route_request"])
    driver.find_element(By.CSS_SELECTOR, "#route-form button").click()
    wait.until(EC.visibility_of_element_located((By.ID, "route-explanation")))
    report["route_explanation"] = text(driver, "#route-explanation")
    shoot(driver, args, "routes")
    report["injected"] = driver.execute_script("return document.querySelectorAll('#injected').length")

    open_view(driver, wait, report, "rollouts", ".rollout")
    report["rollouts"] = text(driver, "#view-rollouts")
    report["rollback"] = text(driver, ".rollout .rollback")
    shoot(driver, args, "rollouts")

    open_view(driver, wait, report, "plans", "#plan-form")
    fill(driver, "#plan-request", args["plan_request"])
    driver.find_element(By.CSS_SELECTOR, "#plan-form button").click()
    wait.until(EC.visibility_of_element_located((By.CSS_SELECTOR, "#plan-effects, #plan-error")))
    report["plan"] = text(driver, "#plan-result")
    report["replays"] = text(driver, "#replays")
    shoot(driver, args, "plans")

    # Last (the candidate serves again after it): the reset action, a POST with the bearer
    # header from the page.
    open_view(driver, wait, report, "rollouts", ".rollout")
    driver.find_element(By.CSS_SELECTOR, '#view-rollouts button[data-reset="pool"]').click()
    wait.until(EC.visibility_of_element_located(
        (By.CSS_SELECTOR, "#view-rollouts .rollout .badge.active")))
    report["after_reset"] = text(driver, "#view-rollouts .rollout")

    report["step"] = "done"
    report["stored_token"] = driver.execute_script(
        "return sessionStorage.getItem('platform-gateway-admin-token')")
    report["cookies"] = driver.get_cookies()
    report["url"] = driver.current_url


if __name__ == "__main__":
    main()

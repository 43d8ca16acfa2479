//! AWS Signature Version 4 for form-encoded POSTs to a Query API (what EC2 speaks).

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// Credentials to sign with.
pub struct Credentials<'a> {
    pub access_key_id: &'a str,
    pub secret_access_key: &'a str,
    pub session_token: Option<&'a str>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any size");
    mac.update(data.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// `yyyymmddThhmmssZ` for Unix time `secs`.
pub fn amz_date(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The headers to send with `body` POSTed to `host` (as it appears in the Host header) for
/// `service` in `region` at `amz_date`: `content-type`, `x-amz-date`, the session token if any,
/// and `authorization`.
pub fn sign(
    credentials: &Credentials<'_>,
    region: &str,
    service: &str,
    host: &str,
    body: &str,
    amz_date: &str,
) -> Vec<(&'static str, String)> {
    let date = &amz_date[..8];
    let content_type = "application/x-www-form-urlencoded; charset=utf-8";
    let mut headers: Vec<(&'static str, String)> = vec![
        ("content-type", content_type.to_string()),
        ("host", host.to_string()),
        ("x-amz-date", amz_date.to_string()),
    ];
    if let Some(token) = credentials.session_token {
        headers.push(("x-amz-security-token", token.to_string()));
    }
    let canonical_headers: String = headers
        .iter()
        .map(|(k, v)| format!("{k}:{}\n", v.trim()))
        .collect();
    let signed_headers = headers
        .iter()
        .map(|(k, _)| *k)
        .collect::<Vec<_>>()
        .join(";");
    let payload_hash = hex(&Sha256::digest(body.as_bytes()));
    let canonical_request =
        format!("POST\n/\n\n{canonical_headers}\n{signed_headers}\n{payload_hash}");
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex(&Sha256::digest(canonical_request.as_bytes()))
    );
    let k_date = hmac(
        format!("AWS4{}", credentials.secret_access_key).as_bytes(),
        date,
    );
    let k_region = hmac(&k_date, region);
    let k_service = hmac(&k_region, service);
    let k_signing = hmac(&k_service, "aws4_request");
    let signature = hex(&hmac(&k_signing, &string_to_sign));
    headers.retain(|(k, _)| *k != "host");
    headers.push((
        "authorization",
        format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
            credentials.access_key_id
        ),
    ));
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_format_as_aws_wants() {
        assert_eq!(amz_date(0), "19700101T000000Z");
        assert_eq!(amz_date(1_440_938_160), "20150830T123600Z");
        assert_eq!(amz_date(951_782_400), "20000229T000000Z");
    }

    // The expected signatures were computed apart from this code, by a 15-line Python SigV4
    // (hashlib and hmac) that reproduces the signature of AWS's documented example
    // (GET iam.amazonaws.com/?Action=ListUsers&Version=2010-05-08 at 20150830T123600Z:
    // 5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7), applied to the same
    // request POSTed as a form, which is how this plugin sends it.
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

    #[test]
    fn a_form_post_gets_the_full_known_signature() {
        let credentials = Credentials {
            access_key_id: "AKIDEXAMPLE",
            secret_access_key: SECRET,
            session_token: None,
        };
        let headers = sign(
            &credentials,
            "us-east-1",
            "iam",
            "iam.amazonaws.com",
            "Action=ListUsers&Version=2010-05-08",
            "20150830T123600Z",
        );
        assert_eq!(
            headers,
            vec![
                (
                    "content-type",
                    "application/x-www-form-urlencoded; charset=utf-8".to_string()
                ),
                ("x-amz-date", "20150830T123600Z".to_string()),
                (
                    "authorization",
                    "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, \
                     SignedHeaders=content-type;host;x-amz-date, \
                     Signature=5d76d0de3e0ffe5a7a23cfce21b99d6f4e5060aad86bd9dc7c617f224e5b492a"
                        .to_string()
                ),
            ]
        );
    }

    #[test]
    fn a_session_token_is_sent_and_signed() {
        let credentials = Credentials {
            access_key_id: "AKIDEXAMPLE",
            secret_access_key: SECRET,
            session_token: Some("session-token-example"),
        };
        let headers = sign(
            &credentials,
            "eu-west-1",
            "ec2",
            "ec2.eu-west-1.amazonaws.com",
            "Action=DescribeInstances&Version=2016-11-15",
            "20150830T123600Z",
        );
        let get = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("x-amz-security-token"), Some("session-token-example"));
        assert_eq!(
            get("authorization"),
            Some(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/eu-west-1/ec2/aws4_request, \
                 SignedHeaders=content-type;host;x-amz-date;x-amz-security-token, \
                 Signature=e439954f7c5e651d629a335f2eedcc866fad6e24ed924f70c8c7d1c660707f47"
            )
        );
    }
}

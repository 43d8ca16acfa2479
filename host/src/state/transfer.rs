//! Moving state between stores: `platform-gateway state export` and `state import`.

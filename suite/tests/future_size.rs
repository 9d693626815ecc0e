//! A cached function's future stays about the size of its body: the loader is boxed on a miss
//! instead of being copied into every layer (a 270 KB future overflowed a worker stack before).

use connscope::cached_resource;

const BODY: usize = 16 * 1024;

#[cached_resource(ttl = "60s")]
async fn big_body(k: u8) -> Result<u32, connscope::Error> {
    let buf = [k; BODY];
    tokio::task::yield_now().await;
    Ok(buf.iter().map(|b| u32::from(*b)).sum())
}

#[cached_resource]
async fn big_plain(k: u8) -> u32 {
    let buf = [k; BODY];
    tokio::task::yield_now().await;
    buf.iter().map(|b| u32::from(*b)).sum()
}

#[test]
fn a_cached_function_future_is_not_much_bigger_than_its_body() {
    let result = std::mem::size_of_val(&big_body(1));
    let plain = std::mem::size_of_val(&big_plain(1));
    assert!(
        result < BODY * 3 / 2,
        "Result-returning cached fn future is {result} bytes for a {BODY}-byte body"
    );
    assert!(plain < BODY * 3 / 2, "plain cached fn future is {plain} bytes for a {BODY}-byte body");
}

#[tokio::test]
async fn and_it_still_caches() {
    assert_eq!(big_body(2).await.unwrap(), 2 * BODY as u32);
    assert_eq!(big_body(2).await.unwrap(), 2 * BODY as u32);
    assert_eq!(big_body::stats().loads, 1);
}

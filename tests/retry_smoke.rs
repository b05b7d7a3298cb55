use steadfast::Code;

#[steadfast::retry(max = 3, backoff = "exp(100ms)", jitter = "none")]
async fn flaky(calls: &mut u32, fail_until: u32) -> Result<u32, Code> {
    *calls += 1;
    if *calls < fail_until {
        return Err(Code::Unavailable);
    }
    Ok(*calls)
}

#[tokio::test(start_paused = true)]
async fn smoke() {
    let mut calls = 0;
    let started = tokio::time::Instant::now();
    assert_eq!(flaky(&mut calls, 3).await, Ok(3));
    assert_eq!(started.elapsed(), std::time::Duration::from_millis(300));
}

//! The S3 API the media service's tests run against
//! (`chat_system_tests::s3`): moto's server creates a bucket, stores an
//! object and lists it, and is gone once killed.

use chat_system_tests::s3::S3Server;

#[tokio::test]
async fn moto_creates_a_bucket_stores_an_object_and_lists_it() {
    chat_system_tests::within_limit(async {
        let mut s3 = S3Server::start().await;
        s3.create_bucket("media-test").await;

        // PutObject, unsigned: moto takes it for a new key.
        let url = format!("{}/media-test/hello.txt", s3.endpoint());
        let put = reqwest::Client::new().put(&url).body("hello").send().await.expect("PutObject");
        assert_eq!(put.status(), 200, "PutObject: {}", put.text().await.unwrap_or_default());
        assert_eq!(s3.object_keys("media-test").await, ["hello.txt"]);

        s3.kill().await;
        assert!(reqwest::get(s3.endpoint()).await.is_err(), "moto_server still answers after kill");
    })
    .await;
}

//! Where attachment bytes live, behind `object_store`'s one interface: a
//! directory of this machine (the embedded default) or a bucket of any
//! S3-compatible store. Writes are multipart uploads, so a file is visible
//! only once complete and an aborted one leaves nothing; reads are streams
//! of one byte range. Memory per transfer is a part, whatever the file's size.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{GetOptions, GetRange, GetResultPayload, ObjectStore, WriteMultipart};

use crate::config::Store;

/// What a stream of a download carries at most at once.
pub const READ_CHUNK_BYTES: usize = 64 * 1024;

pub struct Blobs {
    store: Arc<dyn ObjectStore>,
    /// The size of each part of a write (S3 wants at least 5 MiB but the last).
    part_bytes: usize,
}

/// A file being written; [`BlobWriter::finish`] makes it visible,
/// [`BlobWriter::abort`] (or dropping it) leaves nothing.
pub struct BlobWriter {
    upload: WriteMultipart,
}

impl BlobWriter {
    /// Appends `bytes`, waiting while a part is already being sent.
    ///
    /// # Errors
    /// When the store refuses a part.
    pub async fn write(&mut self, bytes: &[u8]) -> object_store::Result<()> {
        self.upload.wait_for_capacity(1).await?;
        self.upload.write(bytes);
        Ok(())
    }

    /// # Errors
    /// When the store refuses the last part or the completion.
    pub async fn finish(self) -> object_store::Result<()> {
        self.upload.finish().await.map(|_| ())
    }

    pub async fn abort(self) {
        if let Err(e) = self.upload.abort().await {
            tracing::warn!(error = %e, "cannot abort a partial upload");
        }
    }
}

impl Blobs {
    /// Opens the configured store (creating the directory if need be).
    ///
    /// # Errors
    /// When the directory cannot be made or the S3 settings are incomplete.
    pub fn open(store: &Store) -> anyhow::Result<Self> {
        match store {
            Store::Directory(dir) => {
                std::fs::create_dir_all(dir)?;
                let local = object_store::local::LocalFileSystem::new_with_prefix(dir)?.with_automatic_cleanup(true);
                Ok(Self { store: Arc::new(local), part_bytes: 256 * 1024 })
            }
            Store::S3(s3) => {
                let mut builder = object_store::aws::AmazonS3Builder::new()
                    .with_bucket_name(&s3.bucket)
                    .with_region(&s3.region)
                    .with_access_key_id(&s3.access_key_id)
                    .with_secret_access_key(&s3.secret_access_key.0);
                if !s3.endpoint.is_empty() {
                    builder = builder
                        .with_endpoint(&s3.endpoint)
                        .with_allow_http(s3.endpoint.starts_with("http://"))
                        .with_virtual_hosted_style_request(false);
                }
                Ok(Self { store: Arc::new(builder.build()?), part_bytes: 5 * 1024 * 1024 })
            }
        }
    }

    /// Starts writing the file `key`.
    ///
    /// # Errors
    /// When the store refuses.
    pub async fn writer(&self, key: &str) -> object_store::Result<BlobWriter> {
        let upload = self.store.put_multipart(&Path::from(key)).await?;
        Ok(BlobWriter { upload: WriteMultipart::new_with_chunk_size(upload, self.part_bytes) })
    }

    /// The bytes of `range` of the file `key`, in chunks of at most [`READ_CHUNK_BYTES`].
    ///
    /// # Errors
    /// When the file is missing or the store fails.
    pub async fn read(
        &self,
        key: &str,
        range: Range<u64>,
    ) -> object_store::Result<BoxStream<'static, std::io::Result<Bytes>>> {
        let options = GetOptions { range: Some(GetRange::Bounded(range.clone())), ..Default::default() };
        let result = self.store.get_opts(&Path::from(key), options).await?;
        let range = result.range.clone();
        Ok(match result.payload {
            // A file is read in larger pieces than object_store's 8 KiB.
            GetResultPayload::File(file, _) => {
                use std::io::{Seek, SeekFrom};
                let mut file = file;
                file.seek(SeekFrom::Start(range.start))
                    .map_err(|e| object_store::Error::Generic { store: "local", source: Box::new(e) })?;
                let file = tokio::io::AsyncReadExt::take(tokio::fs::File::from_std(file), range.end - range.start);
                tokio_util::io::ReaderStream::with_capacity(file, READ_CHUNK_BYTES).boxed()
            }
            GetResultPayload::Stream(stream) => stream.map_err(std::io::Error::other).boxed(),
        })
    }

    /// Writes the whole file `key` at once (it is small: an image, a thumbnail).
    ///
    /// # Errors
    /// When the store refuses.
    pub async fn put(&self, key: &str, bytes: Vec<u8>) -> object_store::Result<()> {
        self.store.put(&Path::from(key), bytes.into()).await.map(|_| ())
    }

    /// The size of the file `key`.
    ///
    /// # Errors
    /// When the file is missing or the store fails.
    pub async fn size(&self, key: &str) -> object_store::Result<u64> {
        Ok(self.store.head(&Path::from(key)).await?.size)
    }

    /// Removes the file `key`; a missing file is no error.
    ///
    /// # Errors
    /// When the store fails.
    pub async fn delete(&self, key: &str) -> object_store::Result<()> {
        match self.store.delete(&Path::from(key)).await {
            Err(object_store::Error::NotFound { .. }) => Ok(()),
            other => other,
        }
    }
}

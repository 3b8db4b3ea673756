package e2e

import "fmt"

// s3URL is the repository URL of bucket on an S3 endpoint on loopback.
func s3URL(port int, bucket string) string {
	return fmt.Sprintf("s3://127.0.0.1:%d/%s", port, bucket)
}

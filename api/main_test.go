package api_test

import (
	"os"
	"testing"

	"github.com/maestro-ml/maestro/internal/testpg"
	"github.com/maestro-ml/maestro/internal/webtest"
)

func TestMain(m *testing.M) {
	code := testpg.Main(m)
	webtest.Close() // the browser of the UI's browser tests, if one started
	os.Exit(code)
}

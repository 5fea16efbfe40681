"""One module per outside contract; each returns an APIRouter."""
